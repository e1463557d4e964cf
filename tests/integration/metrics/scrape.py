#!/usr/bin/env python3
"""Reads a Prometheus text exposition with prometheus_client's own parser
(so a malformed one fails here) and prints each sample as
NAME{label="value",...} VALUE, labels sorted, one per line.
Usage: scrape.py FILE"""
import sys

from prometheus_client.parser import text_string_to_metric_families

for family in text_string_to_metric_families(open(sys.argv[1]).read()):
    for sample in family.samples:
        labels = ",".join('%s="%s"' % (k, v) for k, v in sorted(sample.labels.items()))
        print("%s{%s} %g" % (sample.name, labels, sample.value))
