//! The sealed columns a change of encryption key re-seals, and the two
//! queries that do it. Table and column names reach the SQL text only from
//! [`SealedColumn::identifiers`], a fixed match; values are always bound.

use crate::store::{Store, StoreError, on_db};

/// Every column that holds a value sealed with mcpgate's encryption key.
/// A new sealed column is a new variant here, so every exhaustive match on
/// it (the SQL identifiers below, the AEAD context in `oauth::reseal`) has
/// to say what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealedColumn {
    SigningKeyPrivate,
    CodeResponse,
    RefreshResponse,
    UpstreamTokens,
    UpstreamLoginSecrets,
    UserUpstreamTokens,
    ConnectAttemptSecrets,
    UpstreamClient,
}

impl SealedColumn {
    pub const ALL: [SealedColumn; 8] = [
        SealedColumn::SigningKeyPrivate,
        SealedColumn::CodeResponse,
        SealedColumn::RefreshResponse,
        SealedColumn::UpstreamTokens,
        SealedColumn::UpstreamLoginSecrets,
        SealedColumn::UserUpstreamTokens,
        SealedColumn::ConnectAttemptSecrets,
        SealedColumn::UpstreamClient,
    ];

    /// `(table, key column, sealed column)`.
    pub fn identifiers(self) -> (&'static str, &'static str, &'static str) {
        match self {
            SealedColumn::SigningKeyPrivate => ("signing_keys", "kid", "private_sealed"),
            SealedColumn::CodeResponse => ("auth_codes", "code_hash", "response_sealed"),
            SealedColumn::RefreshResponse => ("refresh_tokens", "token_hash", "response_sealed"),
            SealedColumn::UpstreamTokens => ("upstream_tokens", "family_id", "sealed"),
            SealedColumn::UpstreamLoginSecrets => {
                ("upstream_logins", "state_hash", "secrets_sealed")
            }
            SealedColumn::UserUpstreamTokens => ("upstream_user_tokens", "connection_id", "sealed"),
            SealedColumn::ConnectAttemptSecrets => {
                ("upstream_connect_attempts", "state_hash", "secrets_sealed")
            }
            SealedColumn::UpstreamClient => ("upstream_clients", "upstream", "sealed"),
        }
    }
}

impl Store {
    /// `(row key, sealed value)` of the values in `column` not starting
    /// with `current_prefix` (those sealed under another key).
    pub async fn stale_sealed(
        &self,
        column: SealedColumn,
        current_prefix: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let (table, key, value) = column.identifiers();
        let sql = format!(
            "SELECT {key}, {value} FROM {table} WHERE {value} IS NOT NULL AND substr({value}, 1, $1) <> $2"
        );
        Ok(on_db!(self.db(), |pool| sqlx::query_as::<
            _,
            (String, String),
        >(sqlx::AssertSqlSafe(
            sql
        ))
        .bind(current_prefix.len() as i64)
        .bind(current_prefix)
        .fetch_all(pool)
        .await)?)
    }

    /// Replace one sealed value if it is still `old` (a concurrent writer wins).
    pub async fn replace_sealed(
        &self,
        column: SealedColumn,
        row: &str,
        old: &str,
        new: &str,
    ) -> Result<bool, StoreError> {
        let (table, key, value) = column.identifiers();
        let sql = format!("UPDATE {table} SET {value} = $1 WHERE {key} = $2 AND {value} = $3");
        Ok(
            on_db!(self.db(), |pool| sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(new)
                .bind(row)
                .bind(old)
                .execute(pool)
                .await
                .map(|r| r.rows_affected()))?
                == 1,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::SealedColumn;

    /// `ALL` is a list the compiler cannot check: every `*sealed` column in
    /// the schema must be in it, or a key change would leave it unreadable.
    #[test]
    fn every_sealed_column_of_the_schema_is_listed() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
        let mut in_schema = Vec::new();
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for file in files {
            let mut table = String::new();
            for line in std::fs::read_to_string(file).unwrap().lines() {
                let words: Vec<&str> = line.split_whitespace().collect();
                match words.as_slice() {
                    ["CREATE", "TABLE", rest @ ..] => {
                        let name = rest.iter().rev().find(|w| **w != "(").unwrap();
                        table = name.trim_end_matches('(').to_owned();
                    }
                    [column, kind, ..]
                        if kind.starts_with("TEXT") && column.ends_with("sealed") =>
                    {
                        in_schema.push((table.clone(), (*column).to_owned()));
                    }
                    _ => {}
                }
            }
        }
        let mut listed: Vec<(String, String)> = SealedColumn::ALL
            .iter()
            .map(|c| {
                let (table, _, column) = c.identifiers();
                (table.to_owned(), column.to_owned())
            })
            .collect();
        in_schema.sort();
        listed.sort();
        assert_eq!(in_schema, listed);
    }
}
