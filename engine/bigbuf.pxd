# Growable raw buffers for the big arrays (order pool, level pool, id index, event buffers).
# Small sizes use malloc/realloc. From 2 MiB up, on Linux, buffers are anonymous mappings advised for
# transparent huge pages and grown with mremap: growth never copies, page faults come 2 MiB at a time
# (a batch writes ~128 bytes of events per command, so 4 KiB faults would dominate), and random
# probes into the id index miss the TLB less. The caller always passes the current size, which is
# what tells the two kinds apart.
cdef extern from *:
    """
    #include <stdlib.h>
    #include <string.h>
    #define FB_BIG_THRESHOLD ((size_t)2 << 20)
    #if defined(__linux__)
    #include <sys/mman.h>
    static void* fb_map(size_t size) {
        void* p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) return NULL;
    #ifdef MADV_HUGEPAGE
        madvise(p, size, MADV_HUGEPAGE);
    #endif
        return p;
    }
    static void fb_buf_free(void* p, size_t size) {
        if (p == NULL) return;
        if (size >= FB_BIG_THRESHOLD) munmap(p, size); else free(p);
    }
    static void* fb_buf_resize(void* p, size_t old_size, size_t new_size) {
        if (new_size < FB_BIG_THRESHOLD) {
            if (old_size < FB_BIG_THRESHOLD) return realloc(p, new_size ? new_size : 1);
            void* q = malloc(new_size ? new_size : 1);
            if (q == NULL) return NULL;
            memcpy(q, p, new_size);
            munmap(p, old_size);
            return q;
        }
        if (old_size >= FB_BIG_THRESHOLD) {
            void* q = mremap(p, old_size, new_size, MREMAP_MAYMOVE);
            if (q == MAP_FAILED) return NULL;
    #ifdef MADV_HUGEPAGE
            if (new_size > old_size) madvise(q, new_size, MADV_HUGEPAGE);
    #endif
            return q;
        }
        void* q = fb_map(new_size);
        if (q == NULL) return NULL;
        if (p != NULL) { memcpy(q, p, old_size); free(p); }
        return q;
    }
    #else
    static void fb_buf_free(void* p, size_t size) { (void)size; free(p); }
    static void* fb_buf_resize(void* p, size_t old_size, size_t new_size) {
        (void)old_size; return realloc(p, new_size ? new_size : 1);
    }
    #endif
    """
    # Resize a buffer of old_size bytes (p may be NULL with old_size 0); NULL on failure (p untouched).
    void* buf_resize "fb_buf_resize"(void* p, size_t old_size, size_t new_size) noexcept nogil
    void buf_free "fb_buf_free"(void* p, size_t size) noexcept nogil
