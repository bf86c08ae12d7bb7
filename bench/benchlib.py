#!/usr/bin/python3
"""Helpers for bench/run.sh: CPU accounting, h2load parsing and the table.

Subcommands:
  cpu PID                  Print the CPU seconds (user + system) used so far
                           by PID and every process below it.
  h2load FILE N BYTES      Check an h2load output file for N successful 2xx
                           responses of BYTES body bytes each and print
                           "<seconds> <body bytes> <requests>".
  table FILE RUNS NAME...  Print the medians of a results file as a table
                           with one column per server NAME.
"""

import os
import re
import statistics
import sys

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# Measurements in table order: key, label, kind. run.sh writes the same
# keys into the results file.
MEASUREMENTS = [
    ("blob_h1_c1", "blob, HTTP/1.1, 1 connection", "blob"),
    ("blob_h1_c4", "blob, HTTP/1.1, 4 connections", "blob"),
    ("blob_h2_c1", "blob, h2, 1 stream", "blob"),
    ("blob_h2_m4", "blob, h2, 4 streams on 1 connection", "blob"),
    ("blob_h2_c4", "blob, h2, 4 connections", "blob"),
    ("manifest_h2", "manifest, h2, 8 connections x 10 streams", "requests"),
    ("manifest_h1", "manifest, HTTP/1.1, 8 connections", "requests"),
    ("manifest_tag_h2", "manifest by tag, h2, 8 connections x 10 streams",
     "requests"),
]


def read_stat(pid):
    """Return (ppid, cpu ticks) of a process, or None once it has gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            line = stat_file.read().decode("ascii", "replace")
    except OSError:
        return None
    # The command name is in parentheses and may itself contain spaces and
    # parentheses, so the fields start after the last ")".
    fields = line[line.rindex(")") + 2:].split()
    ppid = int(fields[1])
    ticks = int(fields[11]) + int(fields[12])
    return ppid, ticks


def tree_cpu_seconds(root):
    """Return the CPU seconds of process `root` and all its descendants."""
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = read_stat(int(entry))
            if stat is not None:
                stats[int(entry)] = stat
    children = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    if root not in stats:
        raise SystemExit(f"benchlib: process {root} not found")
    total = 0
    pending = [root]
    while pending:
        pid = pending.pop()
        total += stats[pid][1]
        pending.extend(children.get(pid, []))
    return total / CLOCK_TICKS


DURATION_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}


def parse_h2load(path, requests, body_bytes):
    """Return (seconds, body bytes, requests) of a successful h2load run.

    Raises SystemExit with the reason when a request failed, a status was
    not 2xx or the body size differs from the expected one.
    """
    with open(path, encoding="utf-8", errors="replace") as output_file:
        text = output_file.read()
    finished = re.search(r"^finished in ([0-9.]+)(s|ms|us),", text, re.M)
    counts = re.search(r"^requests: (\d+) total, \d+ started, (\d+) done, "
                       r"(\d+) succeeded", text, re.M)
    statuses = re.search(r"^status codes: (\d+) 2xx", text, re.M)
    traffic = re.search(r"^traffic: .*\((\d+)\) data", text, re.M)
    if not (finished and counts and statuses and traffic):
        raise SystemExit(f"unexpected h2load output in {path}")
    succeeded = int(counts.group(3))
    if succeeded != requests or int(statuses.group(1)) != requests:
        raise SystemExit(f"{succeeded} of {requests} requests succeeded and "
                         f"{statuses.group(1)} returned 2xx, see {path}")
    data = int(traffic.group(1))
    if body_bytes and data != requests * body_bytes:
        raise SystemExit(f"received {data} body bytes, expected "
                         f"{requests * body_bytes}, see {path}")
    seconds = float(finished.group(1)) * DURATION_UNITS[finished.group(2)]
    if seconds <= 0:
        raise SystemExit(f"zero duration in {path}")
    return seconds, data, succeeded


def load_results(path):
    """Read a results file into a dict from (server, key) to a list of runs.

    Each run is (seconds, body bytes, requests, server CPU seconds, h2load
    CPU seconds), or None when the run failed. Results files written before
    h2load's CPU was recorded give None for it. A line with the key "*"
    marks a server whose measurements stopped early, and print_table shows
    "failed" for each of its measurements without results.
    """
    results = {}
    with open(path, encoding="utf-8") as results_file:
        for line in results_file:
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            server, key = fields[0], fields[1]
            runs = results.setdefault((server, key), [])
            if key == "*":
                runs.append(None)
                continue
            if fields[3] == "failed":
                runs.append(None)
            else:
                client_cpu = float(fields[8]) if len(fields) > 8 else None
                runs.append(tuple(float(value) for value in fields[3:7]) +
                            (client_cpu,))
    return results


def median_or_none(values):
    return statistics.median(values) if values else None


def summarize(runs, kind):
    """Return the median rate, server CPU cost and h2load CPU cost of one
    measurement's runs.

    The rate is MB/s for blobs and requests/s for manifests. A CPU cost is
    seconds per GB (10^9 bytes) for blobs and per 10,000 requests for
    manifests. Any failed run makes the measurement "failed".
    """
    if runs is None:
        return None, None, None
    if any(run is None for run in runs):
        return "failed", "failed", "failed"
    rates, costs, client_costs = [], [], []
    for seconds, data, requests, cpu, client_cpu in runs:
        units = data / 1e9 if kind == "blob" else requests / 1e4
        if kind == "blob":
            rates.append(data / seconds / 1e6)
        else:
            rates.append(requests / seconds)
        costs.append(cpu / units)
        if client_cpu is not None:
            client_costs.append(client_cpu / units)
    return (median_or_none(rates), median_or_none(costs),
            median_or_none(client_costs))


def format_rate(value, kind):
    if value is None:
        return "n/a"
    if isinstance(value, str):
        return value
    if kind == "blob":
        return f"{value:.0f} ({value / 1000:.2f})"
    return f"{value:.0f}"


def format_cost(value):
    if value is None:
        return "n/a"
    if isinstance(value, str):
        return value
    return f"{value:.3f}"


def print_table(path, runs, servers):
    results = load_results(path)
    rate_rows, cost_rows, client_rows = [], [], []
    for key, label, kind in MEASUREMENTS:
        rates, costs, client_costs = [], [], []
        for server in servers:
            server_runs = results.get((server, key),
                                      results.get((server, "*")))
            rate, cost, client_cost = summarize(server_runs, kind)
            rates.append(format_rate(rate, kind))
            costs.append(format_cost(cost))
            client_costs.append(format_cost(client_cost))
        unit = "MB/s (GB/s)" if kind == "blob" else "requests/s"
        cost_unit = "CPU s per GB" if kind == "blob" else "CPU s per 10k req"
        rate_rows.append((f"{label}: {unit}", rates))
        cost_rows.append((f"{label}: {cost_unit}", costs))
        client_rows.append((f"{label}: h2load {cost_unit}", client_costs))

    rows = rate_rows + [None] + cost_rows + [None] + client_rows
    label_width = max(len(row[0]) for row in rows if row)
    column_width = max([len(name) for name in servers] +
                       [len(cell) for row in rows if row for cell in row[1]])
    header = "measurement".ljust(label_width)
    header += "".join("  " + name.rjust(column_width) for name in servers)
    print(f"Medians of {runs} runs. MB = 10^6 bytes, GB = 10^9 bytes; "
          "CPU is user + system time of the cache server's processes, "
          "then of h2load, which shares the machine's CPUs.")
    print(header)
    print("-" * len(header))
    for row in rows:
        if row is None:
            print()
            continue
        label, cells = row
        line = label.ljust(label_width)
        line += "".join("  " + cell.rjust(column_width) for cell in cells)
        print(line)


def main(argv):
    if len(argv) >= 3 and argv[1] == "cpu":
        print(f"{tree_cpu_seconds(int(argv[2])):.2f}")
    elif len(argv) == 5 and argv[1] == "h2load":
        seconds, data, requests = parse_h2load(argv[2], int(argv[3]),
                                               int(argv[4]))
        print(f"{seconds:.6f} {data} {requests}")
    elif len(argv) >= 5 and argv[1] == "table":
        print_table(argv[2], argv[3], argv[4:])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
