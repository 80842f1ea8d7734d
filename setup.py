"""Builds the optional C extension; everything else is in setup.cfg.

classification._jpegregion decodes only the region of a JPEG that a crop needs
(libjpeg-turbo's jpeg_skip_scanlines / jpeg_crop_scanline). It needs a C compiler
and libjpeg-turbo's headers (Debian: libjpeg62-turbo-dev); where either is
missing the build skips it and crops are cut from full decodes, as before.
"""
from setuptools import Extension, setup

setup(ext_modules=[
    Extension('classification._jpegregion', ['classification/_jpegregion.c'],
              libraries=['jpeg'], optional=True,
              extra_compile_args=['-O2', '-Wall']),
])
