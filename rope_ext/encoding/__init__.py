"""The encoding library: rotary position encodings for timm ViTs. Imports torch and timm only.

``rotary`` holds the math of every encoding (``RopeSpec``: its options and defaults, the checks, the
rotation itself; the matrix and fast paths share parameters), ``vit`` puts it into timm's
VisionTransformer (``RopeVisionTransformer``), ``weights`` loads pretrained or local weights,
``relativity`` measures the relative property and the shift error, ``motion`` how far training moved
each block basis. The public names are re-exported by ``rope_ext``.
"""
