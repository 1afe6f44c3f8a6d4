"""The built-in encodings, one module each: every module here registers its encoding on import
(``rope_ext.encoding.registry`` imports them all on first use). A new built-in encoding is one
new module in this folder."""
