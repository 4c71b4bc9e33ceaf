# placeholder, replaced by the engine
cdef enum:
    BUY = 1
