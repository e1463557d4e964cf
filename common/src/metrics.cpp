#include "mailkms/metrics.hpp"

#include <cmath>
#include <cstdio>

namespace mailkms::metrics {
namespace {

// A label value as the format quotes it: backslash, quote and newline escaped.
std::string quoted(const std::string& value) {
  std::string out = "\"";
  for (const char c : value) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out + "\"";
}

std::string label_set(const std::vector<std::string>& names, const Labels& values, const std::string& extra = {}) {
  std::string out;
  for (std::size_t i = 0; i < names.size() && i < values.size(); ++i) {
    out += (out.empty() ? "" : ",") + names[i] + "=" + quoted(values[i]);
  }
  if (!extra.empty()) out += (out.empty() ? "" : ",") + extra;
  return out.empty() ? std::string() : "{" + out + "}";
}

std::string number(double value) {
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  char text[32];
  std::snprintf(text, sizeof text, "%.17g", value);
  return text;
}

// The series for `labels`, or the shared "other" one once a family is full.
template <class Map>
typename Map::mapped_type& series_of(Map& series, const Labels& labels) {
  if (auto it = series.find(labels); it != series.end()) return it->second;
  if (series.size() < Registry::kMaxSeries - 1) return series[labels];
  return series[Labels(labels.size(), "other")];
}

void header(std::string& out, const std::string& name, const std::string& help, const char* type) {
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

}  // namespace

void Registry::Counter::add(const Labels& labels, std::uint64_t n) {
  const std::lock_guard lock(mutex_);
  series_of(series_, labels) += n;
}

void Registry::Histogram::observe(const Labels& labels, double value) {
  const std::lock_guard lock(mutex_);
  Series& s = series_of(series_, labels);
  if (s.buckets.empty()) s.buckets.assign(bounds_.size(), 0);
  for (std::size_t i = 0; i < bounds_.size(); ++i) {
    if (value <= bounds_[i]) {
      ++s.buckets[i];
      break;
    }
  }
  ++s.count;
  s.sum += value;
}

Registry::Counter& Registry::counter(std::string name, std::string help, std::vector<std::string> label_names) {
  auto counter = std::make_unique<Counter>();
  counter->name_ = std::move(name);
  counter->help_ = std::move(help);
  counter->label_names_ = std::move(label_names);
  const std::lock_guard lock(mutex_);
  counters_.push_back(std::move(counter));
  return *counters_.back();
}

Registry::Histogram& Registry::histogram(std::string name, std::string help, std::vector<std::string> label_names,
                                         std::vector<double> bounds) {
  auto histogram = std::make_unique<Histogram>();
  histogram->name_ = std::move(name);
  histogram->help_ = std::move(help);
  histogram->label_names_ = std::move(label_names);
  histogram->bounds_ = std::move(bounds);
  const std::lock_guard lock(mutex_);
  histograms_.push_back(std::move(histogram));
  return *histograms_.back();
}

void Registry::gauge(std::string name, std::string help, std::function<double()> read) {
  const std::lock_guard lock(mutex_);
  gauges_.push_back({std::move(name), std::move(help), std::move(read)});
}

std::string Registry::exposition() const {
  const std::lock_guard lock(mutex_);
  std::string out;
  for (const auto& g : gauges_) {
    header(out, g.name, g.help, "gauge");
    out += g.name + " " + number(g.read()) + "\n";
  }
  for (const auto& c : counters_) {
    header(out, c->name_, c->help_, "counter");
    const std::lock_guard series_lock(c->mutex_);
    for (const auto& [labels, value] : c->series_) {
      out += c->name_ + label_set(c->label_names_, labels) + " " + std::to_string(value) + "\n";
    }
  }
  for (const auto& h : histograms_) {
    header(out, h->name_, h->help_, "histogram");
    const std::lock_guard series_lock(h->mutex_);
    for (const auto& [labels, s] : h->series_) {
      std::uint64_t cumulative = 0;
      for (std::size_t i = 0; i < h->bounds_.size(); ++i) {
        cumulative += s.buckets.empty() ? 0 : s.buckets[i];
        out += h->name_ + "_bucket" + label_set(h->label_names_, labels, "le=" + quoted(number(h->bounds_[i]))) + " " +
               std::to_string(cumulative) + "\n";
      }
      out += h->name_ + "_bucket" + label_set(h->label_names_, labels, "le=\"+Inf\"") + " " + std::to_string(s.count) +
             "\n";
      out += h->name_ + "_sum" + label_set(h->label_names_, labels) + " " + number(s.sum) + "\n";
      out += h->name_ + "_count" + label_set(h->label_names_, labels) + " " + std::to_string(s.count) + "\n";
    }
  }
  return out;
}

std::vector<double> latency_buckets() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
}

}  // namespace mailkms::metrics
