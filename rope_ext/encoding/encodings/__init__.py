"""The layers of the built-in encodings, one module per layer family (``axial_block``: ``BlockRotary``, which
also serves ``axial2_matrix`` and ``axial2_complex``; ``lie_block``: ``LieBlockRotary``). What each encoding
is and accepts is registered by ``rope_ext.encoding.builtins``, which names these classes without importing
them."""
