//! Tenants and API tokens in Postgres, for every service that serves the
//! HTTP API.

use deadpool_postgres::Pool;
use hookfleet_contract::auth::Authenticate;
use hookfleet_contract::{ApiError, TenantId};
use hookfleet_signing::{IssuedToken, hash_token};

use crate::DbError;

#[derive(Debug, Clone)]
pub struct TokenStore {
    pool: Pool,
    admin_token: Option<String>,
}

impl TokenStore {
    /// `admin_token`: the configured admin token; empty disables the admin
    /// API.
    pub fn new(pool: Pool, admin_token: &str) -> Self {
        Self {
            pool,
            admin_token: (!admin_token.is_empty()).then(|| admin_token.to_owned()),
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

    /// Issues a token for the tenant; `None` if there is no such tenant.
    pub async fn issue_token(&self, tenant: &TenantId) -> Result<Option<IssuedToken>, DbError> {
        if !self.tenant_exists(tenant).await? {
            return Ok(None);
        }
        let issued = IssuedToken::generate();
        let client = self.pool.get().await?;
        client
            .execute(
                "INSERT INTO api_tokens (hash, tenant, prefix) VALUES ($1, $2, $3)",
                &[&issued.hash, &tenant.as_str(), &issued.prefix],
            )
            .await?;
        Ok(Some(issued))
    }

    async fn lookup(&self, token: &str) -> Result<Option<TenantId>, DbError> {
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached("SELECT tenant FROM api_tokens WHERE hash = $1 AND revoked_at IS NULL")
            .await?;
        let row = client.query_opt(&statement, &[&hash_token(token)]).await?;
        Ok(row.and_then(|r| TenantId::parse(r.get(0)).ok()))
    }
}

impl Authenticate for TokenStore {
    async fn tenant_for(&self, token: &str) -> Result<Option<TenantId>, ApiError> {
        self.lookup(token).await.map_err(|error| {
            tracing::error!(%error, "token lookup failed");
            ApiError::unavailable("the database is unreachable; retry")
        })
    }

    fn admin_token(&self) -> Option<&str> {
        self.admin_token.as_deref()
    }
}
