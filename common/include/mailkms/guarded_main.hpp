// A daemon's main(): what its serve() did not catch ends the process with a
// line naming the program and the exception, and status 1, rather than
// std::terminate's abort and a core file.
#pragma once

#include <exception>
#include <iostream>

namespace mailkms {

template <class Serve>
int guarded_main(const char* program, Serve serve, int argc, char** argv) {
  try {
    return serve(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << program << ": " << e.what() << "\n";
  } catch (...) {
    std::cerr << program << ": an unknown exception\n";
  }
  return 1;
}

}  // namespace mailkms
