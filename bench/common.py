"""Measurement shared by the benchmarks in bench/: a command's wall time, CPU time and peak memory."""

import subprocess
import threading
import time


def run_measured(cmd, env=None):
    """Runs cmd; returns (seconds, peak RSS MB of the process tree, stdout, CPU seconds).

    CPU seconds (user + system of the process and every descendant it waited for) tell the
    work done whatever else loads the machine; wall seconds give docs/s."""
    import psutil
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak = [0]

    # CPU seconds of every process in the tree, sampled: worker pools that are not waited for
    # do not show in RUSAGE_CHILDREN.
    tree_cpu = {}

    def sample():
        p = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                procs = [p] + p.children(recursive=True)
                rss = 0
                for q in procs:
                    try:
                        rss += q.memory_info().rss
                        t = q.cpu_times()
                        tree_cpu[q.pid] = t.user + t.system
                    except psutil.Error:
                        pass
                peak[0] = max(peak[0], rss)
            except psutil.Error:
                pass
            time.sleep(0.05)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    out, err = proc.communicate()
    t.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: ...{err[-600:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return time.time() - start, peak[0] / 2**20, out, max(cpu, sum(tree_cpu.values()))
