#!/usr/bin/env python3
"""Runs a command and reports what its whole process tree used:
    treestat.py OUT -- COMMAND [ARGS...]
writes one line to OUT: wall seconds, CPU seconds (user + sys of the tree), the peak of the
summed RSS of the tree's processes in KiB (sampled every 10 ms: pgBackRest runs process-max + 1
processes, pgstrata one), and the bytes the tree read from storage (/proc/<pid>/io read_bytes,
the largest value seen for each process, summed). A `runuser` wrapper at the top is not counted.
"""
import os, resource, subprocess, sys, time


def children_map():
    kids = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # comm may hold spaces and parentheses: the fields after the last ')'.
        rest = stat[stat.rfind(")") + 2:].split()
        kids.setdefault(int(rest[1]), []).append(int(name))
    return kids


def tree(root):
    kids, out, todo = children_map(), [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def read_bytes(pid):
    try:
        with open(f"/proc/{pid}/io") as f:
            for line in f:
                if line.startswith("read_bytes:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def main():
    out, cmd = sys.argv[1], sys.argv[3:]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    peak, reads = 0, {}
    while child.poll() is None:
        pids = [p for p in tree(child.pid) if not (p == child.pid and comm(p) == "runuser")]
        peak = max(peak, sum(rss_kib(p) for p in pids))
        for p in pids:
            reads[p] = max(reads.get(p, 0), read_bytes(p))
        time.sleep(0.01)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    with open(out, "w") as f:
        f.write(f"{wall:.2f} {cpu:.2f} {peak} {sum(reads.values())}\n")
    sys.exit(child.returncode)


if __name__ == "__main__":
    main()
