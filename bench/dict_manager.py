# Python side of the Dict/List benchmarks: multiprocessing.Manager().
#   dict_manager.py set N     -> us per d[k] = v (small values), best of 3
#   dict_manager.py get N     -> us per d[k], best of 3
#   dict_manager.py incr N    -> us per increment, 4 processes x N of
#                                `with lock: d[k] += 1` (checks the count)
#   dict_manager.py append N  -> us per append, 4 processes x N (checks
#                                every item arrived once)
#   dict_manager.py memory N  -> the server's VmRSS in MiB with N entries,
#                                then after clear(): "full cleared"
import multiprocessing as mp, sys, time

def keys(n):
    return ["k%d" % (i % 1000) for i in range(n)]

def set_get(d, n, get):
    ks = keys(n)
    for k in ks:
        d[k] = 1
    t0 = time.monotonic()
    if get:
        for k in ks:
            d[k]
    else:
        for i, k in enumerate(ks):
            d[k] = i
    return (time.monotonic() - t0) / n * 1e6

def incr(d, lock, n):
    for _ in range(n):
        with lock:
            d["n"] += 1

def append(l, w, n):
    for i in range(n):
        l.append(w * 1000000 + i)

def four(target, args_for, n):
    ps = [mp.Process(target=target, args=args_for(w) + (n,)) for w in range(4)]
    t0 = time.monotonic()
    for p in ps:
        p.start()
    for p in ps:
        p.join()
    return (time.monotonic() - t0) / (4 * n) * 1e6

def rss_mib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0

if __name__ == "__main__":
    mp.set_start_method("fork")
    kind, n = sys.argv[1], int(sys.argv[2])
    with mp.Manager() as m:
        if kind in ("set", "get"):
            d = m.dict()
            print("%.3f" % min(set_get(d, n, kind == "get") for _ in range(3)))
        elif kind == "incr":
            d, lock = m.dict(n=0), mp.Lock()
            us = four(incr, lambda w: (d, lock), n)
            assert d["n"] == 4 * n, d["n"]
            print("%.3f" % us)
        elif kind == "append":
            l = m.list()
            us = four(append, lambda w: (l, w), n)
            items = list(l)
            assert len(items) == 4 * n and len(set(items)) == 4 * n
            print("%.3f" % us)
        elif kind == "memory":
            d = m.dict()
            d.update({i: "v%d" % i for i in range(n)})
            full = rss_mib(m._process.pid)
            d.clear()
            print("%.1f %.1f" % (full, rss_mib(m._process.pid)))
