# CMake toolchain for the aarch64 wheels .ci/wheels cross-compiles on an x86_64 host with Debian's
# g++-aarch64-linux-gnu (its glibc 2.36 and libstdc++ are bookworm's, as on Raspberry Pi OS bookworm).
# The Python headers come from the arm64 rootfs, passed as Python_INCLUDE_DIR by .ci/wheels.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
