# Python side of the event-loop latency benchmark: a child puts its
# monotonic time on a multiprocessing.Queue, one item at a time, and the
# parent's asyncio loop, woken by loop.add_reader(q._reader), gets it.
# Prints "median p99" latency in microseconds.
import asyncio, multiprocessing as mp, sys, time

def produce(q, n, step):
    for _ in range(n):
        q.put(time.monotonic())
        time.sleep(step)

def main(n, step):
    q = mp.Queue()
    loop = asyncio.new_event_loop()
    lat = []
    done = loop.create_future()
    def on_ready():
        while not q.empty():
            try:
                t = q.get_nowait()
            except Exception:
                break
            lat.append(time.monotonic() - t)
            if len(lat) == n and not done.done():
                done.set_result(True)
    p = mp.Process(target=produce, args=(q, n, step))
    p.start()
    loop.add_reader(q._reader.fileno(), on_ready)
    loop.run_until_complete(done)
    p.join()
    lat.sort()
    print("%.2f %.2f" % (lat[len(lat) // 2] * 1e6, lat[int(len(lat) * 0.99)] * 1e6))

if __name__ == "__main__":
    main(int(sys.argv[1]), float(sys.argv[2]))
