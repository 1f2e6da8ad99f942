"""Drives an etcd v3 endpoint with the Python `etcd3` client, as a user
would, and prints what it sees: one normalised line per call.

Usage: etcd3_client.py PORT. The Rust test tests/python_client.rs runs it
against a real etcd and against basalt and compares the two outputs.
"""
import sys
import threading

import etcd3


def kv_line(value, meta):
    if meta is None:
        return f"value={value!r} meta=None"
    return (
        f"value={value!r} key={meta.key!r} create={meta.create_revision} "
        f"mod={meta.mod_revision} version={meta.version} lease={meta.lease_id}"
    )


def main():
    port = int(sys.argv[1])
    c = etcd3.client(host="127.0.0.1", port=port, timeout=10)
    out = []
    c.put("/app/a", "1")
    c.put("/app/b", "2")
    c.put("/app/a", "3")
    out.append("get /app/a " + kv_line(*c.get("/app/a")))
    out.append("get missing " + kv_line(*c.get("/missing")))
    for value, meta in c.get_prefix("/app/"):
        out.append("prefix " + kv_line(value, meta))
    out.append(f"delete /app/b {c.delete('/app/b')}")
    out.append(f"delete /app/b again {c.delete('/app/b')}")

    ok, responses = c.transaction(
        compare=[c.transactions.version("/app/a") > 0],
        success=[c.transactions.put("/app/t", "yes")],
        failure=[c.transactions.get("/app/a")],
    )
    out.append(f"txn succeeded={ok} responses={len(responses)}")
    ok, responses = c.transaction(
        compare=[c.transactions.value("/app/a") == "nope"],
        success=[],
        failure=[c.transactions.get("/app/a")],
    )
    out.append(f"txn succeeded={ok} got={[kv_line(v, m) for v, m in responses[0]]}")

    lease = c.lease(60, lease_id=4242)
    out.append(f"lease id={lease.id} granted={lease.granted_ttl}")
    c.put("/app/leased", "v", lease=lease)
    out.append("leased " + kv_line(*c.get("/app/leased")))
    out.append(f"lease keys={sorted(lease.keys)}")
    lease.revoke()
    out.append("after revoke " + kv_line(*c.get("/app/leased")))

    events = []
    done = threading.Event()

    def on_event(response):
        for e in response.events:
            events.append(f"{type(e).__name__} {e.key!r} {e.value!r} mod={e.mod_revision}")
        if len(events) >= 3:
            done.set()

    watch_id = c.add_watch_prefix_callback("/w/", on_event)
    c.put("/w/1", "x")
    c.put("/w/2", "y")
    c.delete("/w/1")
    done.wait(10)
    c.cancel_watch(watch_id)
    out.extend("watch " + e for e in events)

    status = c.status()
    out.append(f"status has_leader={status.leader is not None} db_size_positive={status.db_size > 0}")
    members = list(c.members)
    out.append(f"members={len(members)} name={members[0].name}")
    print("\n".join(out))


if __name__ == "__main__":
    main()
