//! Watch on the sequencer: the hub reads history from the sequencer's
//! store and gets every applied revision from its apply hook.

use std::cell::{Ref, RefCell};
use std::rc::{Rc, Weak};

use crate::grpc::Router;
use crate::sequencer::Sequencer;

use super::hub::{History, Hub, HubConfig};
use super::service::{register, run_progress_notifier, HistorySource};

impl HistorySource for Sequencer {
    fn history(&self) -> Ref<'_, dyn History> {
        Ref::map(self.store(), |s| s as &dyn History)
    }
}

/// Serves Watch on the sequencer's executor: creates the hub, subscribes it
/// to applied revisions, registers `/etcdserverpb.Watch/Watch` on `router`
/// and spawns the progress notifier. Call it once, on that executor; the
/// hub lives as long as `router` does.
pub fn attach(router: &mut Router, seq: &Rc<Sequencer>, cfg: HubConfig) -> Rc<RefCell<Hub>> {
    let hub = Rc::new(RefCell::new(Hub::new(cfg, seq.header())));
    let weak = Rc::downgrade(&hub);
    seq.subscribe(Box::new(move |revision, events| {
        if let Some(hub) = weak.upgrade() {
            hub.borrow_mut().publish(revision, events);
        }
    }));
    let source: Rc<dyn HistorySource> = seq.clone();
    register(router, hub.clone(), source.clone());
    let weak_source: Weak<dyn HistorySource> = Rc::downgrade(&source);
    glommio::spawn_local(run_progress_notifier(Rc::downgrade(&hub), weak_source)).detach();
    hub
}
