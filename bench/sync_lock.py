# Python side of the Lock benchmarks: multiprocessing.Lock.
#   sync_lock.py uncontended N  -> us per acquire+release pair
#   sync_lock.py contended N    -> us per increment, 2 processes x N increments
import multiprocessing as mp, sys, time

def count(lock, v, n):
    for _ in range(n):
        lock.acquire()
        v.value += 1
        lock.release()

def run(contended, n):
    lock, v = mp.Lock(), mp.Value("q", 0, lock=False)
    t0 = time.monotonic()
    if contended:
        p = mp.Process(target=count, args=(lock, v, n))
        p.start()
        count(lock, v, n)
        p.join()
        assert v.value == 2 * n
        return (time.monotonic() - t0) / (2 * n) * 1e6
    for _ in range(n):
        lock.acquire()
        lock.release()
    return (time.monotonic() - t0) / n * 1e6

if __name__ == "__main__":
    mp.set_start_method("fork")
    contended, n = sys.argv[1] == "contended", int(sys.argv[2])
    print("%.4f" % min(run(contended, n) for _ in range(3)))
