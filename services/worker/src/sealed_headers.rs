//! An endpoint's custom headers travel sealed in the task, like its
//! secrets; the worker opens them just before sending.

use hookfleet_contract::{DeliveryTask, SEALED_HEADERS, headers_context};
use hookfleet_signing::Sealer;

/// Replaces the task's sealed headers with the headers themselves. A task
/// without sealed headers (made before they were sealed) is left as it is.
pub fn open(task: &mut DeliveryTask, sealer: &Sealer) -> Result<(), String> {
    let Some(sealed) = task.headers.get(SEALED_HEADERS) else {
        return Ok(());
    };
    let why = |e: &dyn std::fmt::Display| format!("task {}: custom headers: {e}", task.delivery_id);
    let json = sealer
        .open(sealed, &headers_context(task.endpoint_id.as_str()))
        .map_err(|e| why(&e))?;
    task.headers = serde_json::from_str(&json).map_err(|e| why(&e))?;
    Ok(())
}
