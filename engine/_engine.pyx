# cython: language_level=3
from types cimport BUY
def _probe():
    return BUY
