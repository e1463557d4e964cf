# Warnings, sanitizers and hardening as INTERFACE targets that each of our
# targets links PRIVATE, so nothing leaks into the flags of dependencies.

add_library(mailkms_warnings INTERFACE)
add_library(mailkms::warnings ALIAS mailkms_warnings)
target_compile_options(mailkms_warnings INTERFACE
  -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wsign-conversion -Wnon-virtual-dtor
  -Wold-style-cast -Wcast-align -Woverloaded-virtual -Wimplicit-fallthrough
  # GCC 12's optimizer reports false positives inside libstdc++'s strings
  # (-Wrestrict, PR 105651) and nlohmann-json (-Wmaybe-uninitialized).
  $<$<AND:$<NOT:$<CONFIG:Debug>>,$<CXX_COMPILER_ID:GNU>>:-Wno-restrict -Wno-maybe-uninitialized>
  $<$<BOOL:${MAILKMS_WERROR}>:-Werror>)

add_library(mailkms_hardening INTERFACE)
add_library(mailkms::hardening ALIAS mailkms_hardening)
target_compile_options(mailkms_hardening INTERFACE
  -fstack-protector-strong -fstack-clash-protection
  $<$<NOT:$<CONFIG:Debug>>:-D_FORTIFY_SOURCE=2>)
target_link_options(mailkms_hardening INTERFACE -Wl,-z,relro -Wl,-z,now)

add_library(mailkms_sanitizers INTERFACE)
add_library(mailkms::sanitizers ALIAS mailkms_sanitizers)
if(MAILKMS_SANITIZE)
  # GCC leaves float-cast-overflow out of "undefined" (clang does not): a
  # double out of an integer's range converted to it is caught all the same.
  target_compile_options(mailkms_sanitizers INTERFACE
    -fsanitize=address,undefined,float-cast-overflow -fno-sanitize-recover=undefined,float-cast-overflow
    -fno-omit-frame-pointer)
  target_link_options(mailkms_sanitizers INTERFACE -fsanitize=address,undefined,float-cast-overflow)
endif()

# The fuzz build: our code instrumented for libFuzzer's coverage and
# checked by ASan and UBSan; only the fuzz targets link libFuzzer itself.
if(MAILKMS_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "MAILKMS_FUZZ needs clang (libFuzzer): configure with -DCMAKE_CXX_COMPILER=clang++")
  endif()
  target_compile_options(mailkms_sanitizers INTERFACE
    -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -gline-tables-only)
  target_link_options(mailkms_sanitizers INTERFACE -fsanitize=address,undefined)
endif()

# Every target of ours links this one.
add_library(mailkms_project_options INTERFACE)
add_library(mailkms::project_options ALIAS mailkms_project_options)
target_link_libraries(mailkms_project_options INTERFACE mailkms_warnings mailkms_hardening mailkms_sanitizers)
