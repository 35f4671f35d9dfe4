//! What a lookup last found, and when: the answer a service keeps using
//! while Postgres is unreachable (an API token, an inbound source), within
//! a grace it chooses. Only found values are kept; "not found" forgets.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The most values remembered; past it the memory starts over (a bound on
/// memory, not a working-set policy: real deployments have far fewer).
const MAX_REMEMBERED: usize = 100_000;

#[derive(Debug)]
pub struct Remembered<V> {
    found: Arc<Mutex<HashMap<String, (V, Instant)>>>,
}

impl<V> Clone for Remembered<V> {
    fn clone(&self) -> Self {
        Self {
            found: self.found.clone(),
        }
    }
}

impl<V> Default for Remembered<V> {
    fn default() -> Self {
        Self {
            found: Arc::default(),
        }
    }
}

impl<V: Clone> Remembered<V> {
    /// What a lookup of `key` just answered: a value is kept (as of now),
    /// none forgets the key.
    pub fn record(&self, key: &str, found: Option<&V>) {
        let Ok(mut remembered) = self.found.lock() else {
            return;
        };
        match found {
            Some(value) => {
                if remembered.len() >= MAX_REMEMBERED {
                    remembered.clear();
                }
                remembered.insert(key.to_owned(), (value.clone(), Instant::now()));
            }
            None => {
                remembered.remove(key);
            }
        }
    }

    /// The value last found for `key`, if found less than `age` ago.
    pub fn within(&self, key: &str, age: Duration) -> Option<V> {
        let remembered = self.found.lock().ok()?;
        remembered
            .get(key)
            .filter(|(_, at)| at.elapsed() < age)
            .map(|(value, _)| value.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_kept_within_its_age_and_forgotten_when_not_found() {
        let remembered = Remembered::default();
        remembered.record("a", Some(&1));
        assert_eq!(remembered.within("a", Duration::from_secs(60)), Some(1));
        assert_eq!(remembered.within("a", Duration::ZERO), None);
        remembered.record("a", None);
        assert_eq!(remembered.within("a", Duration::from_secs(60)), None);
    }
}
