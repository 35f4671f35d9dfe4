//! Tenants and API tokens in Postgres, for every service that serves the
//! HTTP API.
//!
//! Token lookups are cached: every API call needs one, and a Postgres
//! outage should not shut the front door while the broker and the workers
//! carry on. A valid token is trusted for `token_cache_ttl` without asking
//! again (so a revocation takes effect within it), and while Postgres is
//! unreachable for up to `token_outage_grace` since it was last found
//! valid. Only valid tokens are cached; an unknown one is asked about every
//! time.

use std::time::{Duration, SystemTime};

use deadpool_postgres::Pool;
use hookfleet_config::AuthSettings;
use hookfleet_contract::auth::Authenticate;
use hookfleet_contract::{ApiError, TenantId};
use hookfleet_signing::{IssuedToken, hash_token};

use crate::{DbError, Remembered};

/// A token found valid.
#[derive(Debug, Clone)]
struct Known {
    tenant: TenantId,
    expires_at: Option<SystemTime>,
}

/// A token as the admin API lists it (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// `tok_` + the first 16 hex digits of the token's hash.
    pub id: String,
    pub prefix: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
}

/// The stable, public name of a token, derived from its stored hash.
fn token_id(hash: &str) -> String {
    format!("tok_{}", &hash[..16.min(hash.len())])
}

#[derive(Debug, Clone)]
pub struct TokenStore {
    pool: Pool,
    admin_token: Option<String>,
    ttl: Duration,
    outage_grace: Duration,
    /// By token hash.
    known: Remembered<Known>,
}

impl TokenStore {
    /// `admin_token`: the configured admin token; empty disables the admin
    /// API. Lookups are cached for the defaults of [`AuthSettings`].
    pub fn new(pool: Pool, admin_token: &str) -> Self {
        Self::from_settings(
            pool,
            &AuthSettings {
                admin_token: admin_token.to_owned(),
                ..AuthSettings::default()
            },
        )
    }

    pub fn from_settings(pool: Pool, auth: &AuthSettings) -> Self {
        Self {
            pool,
            admin_token: (!auth.admin_token.is_empty()).then(|| auth.admin_token.clone()),
            ttl: Duration::from_millis(auth.token_cache_ttl_ms),
            outage_grace: Duration::from_millis(auth.token_outage_grace_ms),
            known: Remembered::default(),
        }
    }

    /// Creates the tenant; `false` if it existed already.
    pub async fn create_tenant(&self, id: &TenantId, name: &str) -> Result<bool, DbError> {
        let client = self.pool.get().await?;
        let created = client
            .execute(
                "INSERT INTO tenants (id, name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&id.as_str(), &name],
            )
            .await?;
        Ok(created == 1)
    }

    pub async fn tenant_exists(&self, id: &TenantId) -> Result<bool, DbError> {
        let client = self.pool.get().await?;
        Ok(client
            .query_opt("SELECT 1 FROM tenants WHERE id = $1", &[&id.as_str()])
            .await?
            .is_some())
    }

    /// Issues a token for the tenant, valid until `expires_at` (milliseconds
    /// since the epoch) or for ever; `None` if there is no such tenant.
    pub async fn issue_token(
        &self,
        tenant: &TenantId,
        expires_at: Option<i64>,
    ) -> Result<Option<(IssuedToken, TokenInfo)>, DbError> {
        if !self.tenant_exists(tenant).await? {
            return Ok(None);
        }
        let issued = IssuedToken::generate();
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                "INSERT INTO api_tokens (hash, tenant, prefix, expires_at)
                 VALUES ($1, $2, $3, to_timestamp($4::int8 / 1000.0))
                 RETURNING to_json(created_at) #>> '{}', to_json(expires_at) #>> '{}'",
                &[&issued.hash, &tenant.as_str(), &issued.prefix, &expires_at],
            )
            .await?;
        let info = TokenInfo {
            id: token_id(&issued.hash),
            prefix: issued.prefix.clone(),
            created_at: row.get(0),
            expires_at: row.get(1),
            revoked_at: None,
        };
        Ok(Some((issued, info)))
    }

    /// The tenant's tokens, oldest first, revoked and expired ones too.
    pub async fn list_tokens(&self, tenant: &TenantId) -> Result<Vec<TokenInfo>, DbError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT hash, prefix, to_json(created_at) #>> '{}',
                        to_json(expires_at) #>> '{}', to_json(revoked_at) #>> '{}'
                 FROM api_tokens WHERE tenant = $1 ORDER BY created_at, hash",
                &[&tenant.as_str()],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| TokenInfo {
                id: token_id(row.get(0)),
                prefix: row.get(1),
                created_at: row.get(2),
                expires_at: row.get(3),
                revoked_at: row.get(4),
            })
            .collect())
    }

    /// Revokes the tenant's token `id`; `false` if it has no such token.
    /// Takes effect at once here, and within `token_cache_ttl` on every
    /// other instance.
    pub async fn revoke_token(&self, tenant: &TenantId, id: &str) -> Result<bool, DbError> {
        let Some(hex) = id.strip_prefix("tok_").filter(|h| h.len() == 16) else {
            return Ok(false);
        };
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, now())
                 WHERE tenant = $1 AND left(hash, 16) = $2 RETURNING hash",
                &[&tenant.as_str(), &hex],
            )
            .await?;
        for row in &rows {
            self.known.record(row.get::<_, &str>(0), None);
        }
        Ok(!rows.is_empty())
    }

    async fn lookup(&self, hash: &str) -> Result<Option<Known>, DbError> {
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(
                "SELECT tenant, (extract(epoch FROM expires_at) * 1000)::int8 FROM api_tokens
                 WHERE hash = $1 AND revoked_at IS NULL
                   AND (expires_at IS NULL OR expires_at > now())",
            )
            .await?;
        let row = client.query_opt(&statement, &[&hash]).await?;
        Ok(row.and_then(|r| {
            let expires_at: Option<i64> = r.get(1);
            Some(Known {
                tenant: TenantId::parse(r.get(0)).ok()?,
                expires_at: expires_at
                    .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)),
            })
        }))
    }

    /// The tenant of a token Postgres found valid less than `age` ago,
    /// and not expired since.
    fn cached(&self, hash: &str, age: Duration) -> Option<TenantId> {
        self.known
            .within(hash, age)
            .filter(|k| k.expires_at.is_none_or(|at| SystemTime::now() < at))
            .map(|k| k.tenant)
    }
}

impl Authenticate for TokenStore {
    async fn tenant_for(&self, token: &str) -> Result<Option<TenantId>, ApiError> {
        let hash = hash_token(token);
        if let Some(tenant) = self.cached(&hash, self.ttl) {
            return Ok(Some(tenant));
        }
        match self.lookup(&hash).await {
            Ok(found) => {
                let tenant = found.as_ref().map(|k| k.tenant.clone());
                self.known.record(&hash, found.as_ref());
                Ok(tenant)
            }
            Err(error) => {
                if let Some(tenant) = self.cached(&hash, self.outage_grace) {
                    tracing::warn!(%error, "token lookup failed; trusting the cached answer");
                    return Ok(Some(tenant));
                }
                tracing::error!(%error, "token lookup failed");
                Err(ApiError::unavailable("the database is unreachable; retry"))
            }
        }
    }

    fn admin_token(&self) -> Option<&str> {
        self.admin_token.as_deref()
    }
}
