// Prometheus metrics: counters and histograms with labels, kept in memory
// and written out in Prometheus' text exposition format (version 0.0.4)
// for an HTTP scrape (metrics_server.hpp). Names and labels follow
// Prometheus' conventions: snake case, a unit suffix, "_total" on counters.
//
// Label values can come from outside (an operation a client named): each
// family keeps at most kMaxSeries label sets, and folds any further ones
// into one series whose label values are all "other", so a client cannot
// grow the daemon's memory through its metrics.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace mailkms::metrics {

using Labels = std::vector<std::string>;  // values, in the order of the family's label names

class Registry {
 public:
  static constexpr std::size_t kMaxSeries = 256;

  // A counter family; `add` makes the series of `labels` on first use.
  class Counter {
   public:
    void add(const Labels& labels, std::uint64_t n = 1);

   private:
    friend class Registry;
    std::string name_, help_;
    std::vector<std::string> label_names_;
    mutable std::mutex mutex_;
    std::map<Labels, std::uint64_t> series_;
  };

  // A histogram family with fixed upper bounds (seconds, bytes…), ascending.
  class Histogram {
   public:
    void observe(const Labels& labels, double value);

   private:
    friend class Registry;
    struct Series {
      std::vector<std::uint64_t> buckets;  // cumulative when written, per bucket here
      std::uint64_t count = 0;
      double sum = 0;
    };
    std::string name_, help_;
    std::vector<std::string> label_names_;
    std::vector<double> bounds_;
    mutable std::mutex mutex_;
    std::map<Labels, Series> series_;
  };

  Counter& counter(std::string name, std::string help, std::vector<std::string> label_names);
  Histogram& histogram(std::string name, std::string help, std::vector<std::string> label_names,
                       std::vector<double> bounds);
  // A gauge read when scraped.
  void gauge(std::string name, std::string help, std::function<double()> read);

  // Every family, in the order made, in the text exposition format.
  [[nodiscard]] std::string exposition() const;

 private:
  struct Gauge {
    std::string name, help;
    std::function<double()> read;
  };
  mutable std::mutex mutex_;
  std::vector<std::unique_ptr<Counter>> counters_;
  std::vector<std::unique_ptr<Histogram>> histograms_;
  std::vector<Gauge> gauges_;
};

// Latency buckets for requests that take from 100 µs to 10 s.
std::vector<double> latency_buckets();

}  // namespace mailkms::metrics
