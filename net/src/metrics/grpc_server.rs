//! go-grpc-prometheus's server families, with etcd's names, help texts and
//! label values (observed on etcd 3.4.23's `/metrics`): every counted
//! method has its series from the start, `grpc_server_handled_total` one
//! per status code. Series are sorted by label values as the Go client
//! library writes them, so a diff against etcd's output lines up.

use std::fmt::Write;

use crate::grpc::{Code, MethodTotals, HANDLING_BUCKETS};

/// Appends basalt's `basalt_executor_client_connections_total`: the client
/// connections each executor was given, so an operator sees whether the
/// load is spread over the cores.
pub fn render_executor_connections(out: &mut String, per_executor: &[u64]) {
    family(
        out,
        "basalt_executor_client_connections_total",
        "Client connections each executor has served.",
    );
    for (executor, n) in per_executor.iter().enumerate() {
        let _ = writeln!(
            out,
            "basalt_executor_client_connections_total{{executor=\"{executor}\"}} {n}"
        );
    }
}

/// Appends `etcd_network_client_grpc_received_bytes_total` and
/// `etcd_network_client_grpc_sent_bytes_total` (gRPC messages with their
/// frame headers).
pub fn render_client_bytes(out: &mut String, (received, sent): (u64, u64)) {
    family(
        out,
        "etcd_network_client_grpc_received_bytes_total",
        "The total number of bytes received from grpc clients.",
    );
    let _ = writeln!(
        out,
        "etcd_network_client_grpc_received_bytes_total {received}"
    );
    family(
        out,
        "etcd_network_client_grpc_sent_bytes_total",
        "The total number of bytes sent to grpc clients.",
    );
    let _ = writeln!(out, "etcd_network_client_grpc_sent_bytes_total {sent}");
}

/// Appends `grpc_server_handled_total`, `grpc_server_msg_received_total`,
/// `grpc_server_msg_sent_total` and `grpc_server_started_total`.
pub fn render_grpc_server(out: &mut String, totals: &[MethodTotals]) {
    let mut handled = Vec::with_capacity(totals.len() * Code::ALL.len());
    for t in totals {
        for code in Code::ALL {
            handled.push((
                code.grpc_go_name(),
                t.method.name(),
                t.method.service(),
                t.method.kind.label(),
                t.handled[code as usize],
            ));
        }
    }
    handled.sort_unstable();
    family(
        out,
        "grpc_server_handled_total",
        "Total number of RPCs completed on the server, regardless of success or failure.",
    );
    for (code, method, service, kind, n) in handled {
        let _ = writeln!(
            out,
            "grpc_server_handled_total{{grpc_code=\"{code}\",grpc_method=\"{method}\",\
             grpc_service=\"{service}\",grpc_type=\"{kind}\"}} {n}"
        );
    }
    per_method(
        out,
        totals,
        "grpc_server_msg_received_total",
        "Total number of RPC stream messages received on the server.",
        |t| t.received,
    );
    per_method(
        out,
        totals,
        "grpc_server_msg_sent_total",
        "Total number of gRPC stream messages sent by the server.",
        |t| t.sent,
    );
    per_method(
        out,
        totals,
        "grpc_server_started_total",
        "Total number of RPCs started on the server.",
        |t| t.started,
    );
}

/// Appends `grpc_server_handling_seconds` (etcd exports it with
/// `--metrics extensive`): every method's histogram, zero until called.
pub fn render_handling_seconds(out: &mut String, totals: &[MethodTotals]) {
    let name = "grpc_server_handling_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Histogram of response latency (seconds) of gRPC that had been \
         application-level handled by the server."
    );
    let _ = writeln!(out, "# TYPE {name} histogram");
    let mut sorted: Vec<&MethodTotals> = totals.iter().collect();
    sorted.sort_unstable_by_key(|t| (t.method.name(), t.method.service(), t.method.kind.label()));
    for t in sorted {
        let labels = format!(
            "grpc_method=\"{}\",grpc_service=\"{}\",grpc_type=\"{}\"",
            t.method.name(),
            t.method.service(),
            t.method.kind.label()
        );
        let mut cumulative = 0;
        for (bound, n) in HANDLING_BUCKETS.iter().zip(&t.handling) {
            cumulative += n;
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        cumulative += t.handling[HANDLING_BUCKETS.len()];
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", t.handling_seconds);
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }
}

fn family(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} counter");
}

fn per_method(
    out: &mut String,
    totals: &[MethodTotals],
    name: &str,
    help: &str,
    value: impl Fn(&MethodTotals) -> u64,
) {
    family(out, name, help);
    let mut series: Vec<_> = totals
        .iter()
        .map(|t| {
            (
                t.method.name(),
                t.method.service(),
                t.method.kind.label(),
                value(t),
            )
        })
        .collect();
    series.sort_unstable();
    for (method, service, kind, n) in series {
        let _ = writeln!(
            out,
            "{name}{{grpc_method=\"{method}\",grpc_service=\"{service}\",grpc_type=\"{kind}\"}} {n}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::{CallMetrics, METHODS};

    #[test]
    fn every_method_and_code_has_a_series() {
        let metrics = CallMetrics::new(2);
        let t = metrics.executor(1).start("/etcdserverpb.KV/Put").unwrap();
        t.received();
        t.finished(Code::InvalidArgument);
        let mut out = String::new();
        render_grpc_server(&mut out, &metrics.totals());
        let count = |prefix: &str| out.lines().filter(|l| l.starts_with(prefix)).count();
        assert_eq!(count("grpc_server_handled_total{"), METHODS.len() * 17);
        for f in ["msg_received", "msg_sent", "started"] {
            assert_eq!(count(&format!("grpc_server_{f}_total{{")), METHODS.len());
        }
        for line in [
            "grpc_server_handled_total{grpc_code=\"InvalidArgument\",grpc_method=\"Put\",\
             grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 1\n",
            "grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Put\",\
             grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 0\n",
            "grpc_server_started_total{grpc_method=\"Put\",grpc_service=\"etcdserverpb.KV\",\
             grpc_type=\"unary\"} 1\n",
            "grpc_server_msg_received_total{grpc_method=\"Put\",grpc_service=\"etcdserverpb.KV\",\
             grpc_type=\"unary\"} 1\n",
            "grpc_server_msg_sent_total{grpc_method=\"Watch\",grpc_service=\"etcdserverpb.Watch\",\
             grpc_type=\"bidi_stream\"} 0\n",
            "# TYPE grpc_server_started_total counter\n",
        ] {
            assert!(out.contains(line), "missing {line:?}");
        }
        let mut hist = String::new();
        render_handling_seconds(&mut hist, &metrics.totals());
        for line in [
            "grpc_server_handling_seconds_bucket{grpc_method=\"Put\",grpc_service=\"etcdserverpb.KV\",\
             grpc_type=\"unary\",le=\"0.005\"} 1\n",
            "grpc_server_handling_seconds_bucket{grpc_method=\"Put\",grpc_service=\"etcdserverpb.KV\",\
             grpc_type=\"unary\",le=\"1\"} 1\n",
            "grpc_server_handling_seconds_count{grpc_method=\"Put\",grpc_service=\"etcdserverpb.KV\",\
             grpc_type=\"unary\"} 1\n",
            "grpc_server_handling_seconds_bucket{grpc_method=\"Range\",grpc_service=\"etcdserverpb.KV\",\
             grpc_type=\"unary\",le=\"+Inf\"} 0\n",
            "# TYPE grpc_server_handling_seconds histogram\n",
        ] {
            assert!(hist.contains(line), "missing {line:?}");
        }
        assert_eq!(
            hist.lines()
                .filter(|l| l.starts_with("grpc_server_handling_seconds_count{"))
                .count(),
            METHODS.len()
        );
        // Sorted as etcd writes them: by code first.
        let first = out.lines().nth(2).unwrap();
        assert!(
            first.starts_with(
                "grpc_server_handled_total{grpc_code=\"Aborted\",grpc_method=\"Alarm\""
            ),
            "{first}"
        );
    }
}
