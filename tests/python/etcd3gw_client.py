"""Drives an etcd v3 JSON gateway with the Python `etcd3gw` client, as a
user would, and prints what it sees: one normalised line per call.

Usage: etcd3gw_client.py PORT. The Rust test tests/gateway.rs runs it
against a real etcd and against basalt and compares the two outputs.
"""
import sys
import threading

import etcd3gw


def kvs(items):
    return [
        (
            value,
            meta["key"],
            meta["create_revision"],
            meta["mod_revision"],
            meta["version"],
            meta.get("lease", "0") != "0",
        )
        for value, meta in items
    ]


def main():
    port = int(sys.argv[1])
    c = etcd3gw.client(host="127.0.0.1", port=port, timeout=10)
    out = []
    out.append(f"put {c.put('/app/a', '1')}")
    out.append(f"put {c.put('/app/b', '2')}")
    out.append(f"put {c.put('/app/a', '3')}")
    out.append(f"get {c.get('/app/a')}")
    out.append(f"get meta {kvs(c.get('/app/a', metadata=True))}")
    out.append(f"get missing {c.get('/missing')}")
    out.append(f"prefix {sorted(c.get_prefix('/app/'), key=lambda x: x[1]['key'])!r}")
    out.append(f"create new {c.create('/app/c', 'x')}")
    out.append(f"create taken {c.create('/app/c', 'y')}")
    out.append(f"replace ok {c.replace('/app/c', 'x', 'z')}")
    out.append(f"replace stale {c.replace('/app/c', 'x', 'w')}")
    out.append(f"get c {c.get('/app/c')}")

    lease = c.lease(ttl=30)
    out.append(f"lease ttl {30 - lease.ttl() <= 2}")
    out.append(f"put leased {c.put('/leased', 'v', lease=lease)}")
    out.append(f"lease keys {lease.keys()}")
    out.append(f"refresh {lease.refresh()}")
    out.append(f"revoke {lease.revoke()}")
    out.append(f"leased gone {c.get('/leased')}")

    txn = c.transaction(
        {
            "compare": [
                {
                    "key": etcd3gw.utils._encode("/app/a"),
                    "result": "EQUAL",
                    "target": "VALUE",
                    "value": etcd3gw.utils._encode("3"),
                }
            ],
            "success": [
                {
                    "request_put": {
                        "key": etcd3gw.utils._encode("/app/t"),
                        "value": etcd3gw.utils._encode("yes"),
                    }
                }
            ],
            "failure": [],
        }
    )
    out.append(f"txn succeeded {txn.get('succeeded', False)} n={len(txn['responses'])}")

    lock = c.lock(id="job", ttl=30)
    out.append(f"lock acquire {lock.acquire()}")
    out.append(f"lock held {lock.is_acquired()}")
    out.append(f"lock release {lock.release()}")

    events = []
    ready = threading.Event()

    def watch():
        ready.set()
        events.append(c.watch_once("/w", timeout=5))

    t = threading.Thread(target=watch)
    t.start()
    ready.wait()
    import time

    time.sleep(0.5)
    c.put("/w", "seen")
    t.join()
    ev = events[0]
    out.append(f"watch_once {ev['kv']['key']} {ev['kv']['value']} {ev.get('type', 'PUT')}")

    out.append(f"delete {c.delete('/app/a')}")
    out.append(f"delete missing {c.delete('/app/a')}")
    out.append(f"delete prefix {c.delete_prefix('/app/')}")
    out.append(f"members {len(c.members())}")
    status = c.status()
    out.append(f"status keys {sorted(k for k in status if k not in ('dbSizeQuota',))}")
    print("\n".join(out))


if __name__ == "__main__":
    main()
