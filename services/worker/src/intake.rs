//! Taking a delivery task off the queue: its metadata, its secrets opened
//! under the task's own context (tenant, endpoint and URL, issue 16 item
//! 4), then the registry view's verdict (item 2).
//!
//! A task whose secrets do not open under its own context is parked, not
//! sent: it was copied with another URL, tenant or endpoint, or sealed
//! before secrets were bound to the URL. Such old tasks are not accepted
//! for a transition: that would leave the hole open for exactly the tasks
//! an attacker could have copied, for as long as any of them is around (the
//! dead-letter queue keeps them indefinitely). Their deliveries are in the
//! ledger; a recovery sends them again, sealed the new way.

use hookfleet_contract::{DeliveryTask, headers};
use hookfleet_signing::{Ed25519Key, Sealer, SigningSecret};
use hookfleet_topology::header_str;
use lapin::message::Delivery;

use crate::registry_view::{Cancelled, RegistryView, Verdict};
use crate::sender::Keys;

/// What becomes of a task taken off the queue.
#[derive(Debug)]
pub enum Intake {
    /// Send it, signed with these keys.
    Deliver(Box<(DeliveryTask, Keys)>),
    /// Record why it is not sent, and drop it.
    Cancel(Box<Cancelled>),
    /// Park it with this reason.
    Malformed(String),
}

pub fn take(delivery: &Delivery, sealer: &Sealer, registry: &RegistryView) -> Intake {
    let task = match parse(delivery) {
        Ok(task) => task,
        Err(reason) => return Intake::Malformed(reason),
    };
    let keys = match open_keys(&task, sealer) {
        Ok(keys) => keys,
        Err(reason) => return Intake::Malformed(reason),
    };
    let (mut task, keys) = match registry.verdict(task, hookfleet_contract::now_millis()) {
        Verdict::Send(task) => (task, keys),
        Verdict::Retarget(task) => match open_keys(&task, sealer) {
            Ok(keys) => (task, keys),
            Err(reason) => return Intake::Malformed(reason),
        },
        Verdict::Cancel(cancelled) => return Intake::Cancel(Box::new(cancelled)),
    };
    // The custom headers (the task's or the registry's current ones),
    // sealed like the secrets, are opened last, once it is known which.
    if let Err(reason) = crate::sealed_headers::open(&mut task, sealer) {
        return Intake::Malformed(reason);
    }
    Intake::Deliver(Box::new((task, keys)))
}

fn parse(delivery: &Delivery) -> Result<DeliveryTask, String> {
    let meta = header_str(&delivery.properties, headers::META)
        .ok_or_else(|| format!("header {} is missing", headers::META))?;
    DeliveryTask::from_meta_json(meta).map_err(|e| format!("header {}: {e}", headers::META))
}

/// The task's secrets, opened under its own tenant, endpoint and URL.
pub fn open_keys(task: &DeliveryTask, sealer: &Sealer) -> Result<Keys, String> {
    let wont_open = |what: &str, error: hookfleet_signing::SealError| {
        format!(
            "task {}: {what}: {error}; it is sealed for another tenant, endpoint or URL than the \
             task names (a copied task, or one sealed before secrets were bound to the URL: \
             recover the endpoint to send it again)",
            task.delivery_id
        )
    };
    let context = task.secret_context();
    let secrets = task
        .sealed_secrets
        .iter()
        .map(|sealed| {
            let secret = sealer
                .open(sealed, &context)
                .map_err(|e| wont_open("signing secret", e))?;
            SigningSecret::parse(&secret)
                .map_err(|e| format!("task {}: signing secret: {e}", task.delivery_id))
        })
        .collect::<Result<Vec<_>, String>>()?;
    if secrets.is_empty() {
        return Err(format!("task {} has no signing secret", task.delivery_id));
    }
    let ed25519 = task
        .sealed_ed25519
        .as_deref()
        .map(|sealed| {
            let key = sealer
                .open(sealed, &task.ed25519_context())
                .map_err(|e| wont_open("ed25519 key", e))?;
            Ed25519Key::parse(&key)
                .map_err(|e| format!("task {}: ed25519 key: {e}", task.delivery_id))
        })
        .transpose()?;
    Ok(Keys { secrets, ed25519 })
}
