//! A stop signal shared by every task of a phase: the end of `--duration`,
//! the end of `--total`, Ctrl-C, or the end of a profile's traffic phase.

use tokio::sync::watch;

/// Cloneable stop signal. Once triggered it stays triggered.
#[derive(Clone, Debug)]
pub struct Shutdown {
    tx: watch::Sender<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A signal that has not fired yet.
    pub fn new() -> Self {
        let (tx, _) = watch::channel(false);
        Self { tx }
    }

    /// Fires the signal; every waiter wakes up.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    /// Whether the signal has fired.
    pub fn is_triggered(&self) -> bool {
        *self.tx.borrow()
    }

    /// Resolves once the signal has fired (at once if it already has).
    pub async fn wait(&self) {
        let mut rx = self.tx.subscribe();
        // The sender lives in `self`, so the channel cannot close while we
        // wait; an error could only mean it did, and then stopping is right.
        let _ = rx.wait_for(|fired| *fired).await;
    }

    /// Fires this signal when `other` fires.
    pub fn follow(&self, other: &Shutdown) {
        let this = self.clone();
        let other = other.clone();
        tokio::spawn(async move {
            other.wait().await;
            this.trigger();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_returns_after_trigger_even_if_late() {
        let s = Shutdown::new();
        assert!(!s.is_triggered());
        s.trigger();
        tokio::time::timeout(std::time::Duration::from_secs(1), s.wait())
            .await
            .expect("wait must return once triggered");
        assert!(s.is_triggered());
    }

    #[tokio::test]
    async fn follow_propagates() {
        let a = Shutdown::new();
        let b = Shutdown::new();
        b.follow(&a);
        a.trigger();
        tokio::time::timeout(std::time::Duration::from_secs(1), b.wait())
            .await
            .expect("follower must fire");
    }
}
