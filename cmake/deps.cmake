# Every dependency comes from a Debian 12 package; a missing one stops the
# configuration with the name of the package to install.
find_package(PkgConfig)
if(NOT PKG_CONFIG_FOUND)
  message(FATAL_ERROR "pkg-config not found: apt-get install pkg-config")
endif()
find_package(Threads REQUIRED)

macro(ringmail_require_pkg var module debpkg)
  pkg_check_modules(${var} QUIET IMPORTED_TARGET ${module})
  if(NOT ${var}_FOUND)
    message(FATAL_ERROR "${module} not found: apt-get install ${debpkg}")
  endif()
endmacro()

ringmail_require_pkg(URING "liburing>=2.3" liburing-dev)
ringmail_require_pkg(YAML yaml-0.1 libyaml-dev)
ringmail_require_pkg(XXHASH libxxhash libxxhash-dev)
ringmail_require_pkg(CRYPT libcrypt libcrypt-dev) # libxcrypt: crypt_rn, crypt_checksalt
ringmail_require_pkg(JANSSON jansson libjansson-dev) # `ringmail queue` reads /queue's JSON
if(RINGMAIL_USE_JEMALLOC)
  ringmail_require_pkg(JEMALLOC jemalloc libjemalloc-dev)
endif()

# BoringSSL from android-libboringssl-dev: headers under /usr/include/android,
# libraries under /usr/lib/<triplet>/android. Linked by full path with an RPATH
# so that OpenSSL's libraries and headers can never win.
find_path(BORINGSSL_INCLUDE_DIR openssl/base.h PATHS /usr/include/android NO_DEFAULT_PATH)
set(_bssl_libdir /usr/lib/${CMAKE_LIBRARY_ARCHITECTURE}/android)
find_library(BORINGSSL_SSL NAMES ssl PATHS ${_bssl_libdir} NO_DEFAULT_PATH)
find_library(BORINGSSL_CRYPTO NAMES crypto PATHS ${_bssl_libdir} NO_DEFAULT_PATH)
if(NOT BORINGSSL_INCLUDE_DIR OR NOT BORINGSSL_SSL OR NOT BORINGSSL_CRYPTO)
  message(FATAL_ERROR "BoringSSL not found: apt-get install android-libboringssl-dev")
endif()
add_library(boringssl INTERFACE)
target_include_directories(boringssl SYSTEM BEFORE INTERFACE ${BORINGSSL_INCLUDE_DIR})
target_link_libraries(boringssl INTERFACE ${BORINGSSL_SSL} ${BORINGSSL_CRYPTO})
target_link_options(boringssl INTERFACE "-Wl,-rpath,${_bssl_libdir}")

if(RINGMAIL_TESTS)
  ringmail_require_pkg(CRITERION criterion libcriterion-dev)
endif()
