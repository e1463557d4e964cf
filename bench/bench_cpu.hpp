// CPU time from /proc/PID/stat, to charge each phase of a benchmark with
// the CPU every process spent on it: utime+stime before and after, all of
// a process's threads together.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>

namespace mailkms::bench {

struct ProcessStat {
  std::string name;  // comm: the executable's name, at most 15 characters
  pid_t parent = 0;
  double cpu_seconds = 0;       // utime + stime
  double reaped_seconds = 0;    // cutime + cstime: children that exited and were waited for
};

// nullopt when there is no such process (or it cannot be read).
std::optional<ProcessStat> read_process(pid_t pid);

// A process's CPU seconds; 0 once it is gone.
double cpu_seconds(pid_t pid);

// `root` and every child of it, those that exited and were reaped
// included: a server that forks a process per connection (PostgreSQL's
// postmaster) as a whole.
double tree_cpu_seconds(pid_t root);

// This process's: every thread's, user and system.
double own_cpu_seconds();

}  // namespace mailkms::bench
