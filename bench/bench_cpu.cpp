#include "bench_cpu.hpp"

#include <sys/resource.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace mailkms::bench {

std::optional<ProcessStat> read_process(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(in, line)) return std::nullopt;
  // "PID (COMM) STATE PPID …": COMM may hold spaces and parentheses, so the
  // fields are counted from the last ')'.
  const auto open = line.find('(');
  const auto close = line.rfind(')');
  if (open == std::string::npos || close == std::string::npos || close < open) return std::nullopt;
  std::istringstream fields(line.substr(close + 1));
  std::string state;
  long parent = 0;
  std::string skipped;
  fields >> state >> parent;
  for (int field = 5; field <= 13; ++field) fields >> skipped;  // pgrp … cmajflt
  unsigned long long user = 0;
  unsigned long long system = 0;
  long long children_user = 0;
  long long children_system = 0;
  fields >> user >> system >> children_user >> children_system;  // fields 14 to 17, in clock ticks
  if (!fields) return std::nullopt;
  const auto ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
  return ProcessStat{line.substr(open + 1, close - open - 1), static_cast<pid_t>(parent),
                     static_cast<double>(user + system) / ticks,
                     static_cast<double>(children_user + children_system) / ticks};
}

double cpu_seconds(pid_t pid) {
  const auto stat = read_process(pid);
  return stat ? stat->cpu_seconds : 0.0;
}

double tree_cpu_seconds(pid_t root) {
  const auto top = read_process(root);
  if (!top) return 0.0;
  // A child that exits between the two readings moves from the sum below
  // into the root's reaped time: the total stays whole.
  double total = top->cpu_seconds + top->reaped_seconds;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    const auto stat = read_process(static_cast<pid_t>(std::strtol(name.c_str(), nullptr, 10)));
    if (stat && stat->parent == root) total += stat->cpu_seconds;
  }
  return total;
}

double own_cpu_seconds() {
  rusage usage{};
  if (::getrusage(RUSAGE_SELF, &usage) != 0) return 0.0;
  const auto seconds = [](const timeval& t) { return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6; };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

}  // namespace mailkms::bench
