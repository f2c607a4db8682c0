# Python side of the codec benchmark: pickle.dumps + pickle.loads.
import pickle, sys, time

def mixed():
    out = []
    for i in range(1, 101):
        k = i % 5
        out.append(i if k == 0 else i + 0.5 if k == 1 else "value-%d" % i if k == 2
                   else True if k == 3 else {"a": i, "b": "x"})
    return out

if __name__ == "__main__":
    kind, n = sys.argv[1], int(sys.argv[2])
    value = {"mixed": mixed(), "int": 123456789, "mib": "0123456789abcdef" * 65536}[kind]
    dumps, loads, proto = pickle.dumps, pickle.loads, pickle.HIGHEST_PROTOCOL
    best = 1e9
    for _ in range(3):
        t0 = time.monotonic()
        for _ in range(n):
            loads(dumps(value, proto))
        best = min(best, (time.monotonic() - t0) / n * 1e6)
    print("%.3f" % best)
