//! Notes owned by a principal. Every query is scoped by `owner`, so one
//! caller can never read or change another's notes, even by guessing ids.

use serde::Serialize;

use super::{Store, StoreError, now_epoch, on_db};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Note {
    pub id: String,
    #[serde(skip)]
    pub owner: String,
    pub title: String,
    pub body: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone)]
pub struct NoteDraft {
    pub title: String,
    pub body: String,
}

#[derive(Debug, Clone, Default)]
pub struct NotePatch {
    pub title: Option<String>,
    pub body: Option<String>,
}

/// The columns of [`Note`], spelled once for every SELECT/RETURNING.
macro_rules! note_columns {
    () => {
        "id, owner, title, body, created_at, updated_at"
    };
}

impl Store {
    pub async fn create_note(&self, owner: &str, draft: NoteDraft) -> Result<Note, StoreError> {
        let now = now_epoch();
        let note = Note {
            id: uuid::Uuid::now_v7().to_string(),
            owner: owner.to_owned(),
            title: draft.title,
            body: draft.body,
            created_at: now,
            updated_at: now,
        };
        let sql = "INSERT INTO notes (id, owner, title, body, created_at, updated_at) \
                   VALUES ($1, $2, $3, $4, $5, $6)";
        on_db!(self.db(), |pool| sqlx::query(sql)
            .bind(&note.id)
            .bind(&note.owner)
            .bind(&note.title)
            .bind(&note.body)
            .bind(note.created_at)
            .bind(note.updated_at)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(note)
    }

    pub async fn get_note(&self, owner: &str, id: &str) -> Result<Option<Note>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            note_columns!(),
            " FROM notes WHERE owner = $1 AND id = $2"
        );
        let note = on_db!(self.db(), |pool| sqlx::query_as::<_, Note>(SQL)
            .bind(owner)
            .bind(id)
            .fetch_optional(pool)
            .await)?;
        Ok(note)
    }

    /// Most recently updated first, at most `limit`.
    pub async fn list_notes(&self, owner: &str, limit: i64) -> Result<Vec<Note>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            note_columns!(),
            " FROM notes WHERE owner = $1 ORDER BY updated_at DESC, id DESC LIMIT $2"
        );
        let notes = on_db!(self.db(), |pool| sqlx::query_as::<_, Note>(SQL)
            .bind(owner)
            .bind(limit)
            .fetch_all(pool)
            .await)?;
        Ok(notes)
    }

    /// Apply the fields present in `patch` in one statement; `None` when the
    /// note does not exist for this owner.
    pub async fn update_note(
        &self,
        owner: &str,
        id: &str,
        patch: NotePatch,
    ) -> Result<Option<Note>, StoreError> {
        const SQL: &str = concat!(
            "UPDATE notes SET title = COALESCE($3, title), body = COALESCE($4, body), ",
            "updated_at = $5 WHERE owner = $1 AND id = $2 RETURNING ",
            note_columns!()
        );
        let note = on_db!(self.db(), |pool| sqlx::query_as::<_, Note>(SQL)
            .bind(owner)
            .bind(id)
            .bind(patch.title.as_deref())
            .bind(patch.body.as_deref())
            .bind(now_epoch())
            .fetch_optional(pool)
            .await)?;
        Ok(note)
    }

    /// `true` when a note was deleted.
    pub async fn delete_note(&self, owner: &str, id: &str) -> Result<bool, StoreError> {
        let sql = "DELETE FROM notes WHERE owner = $1 AND id = $2";
        let result = on_db!(self.db(), |pool| sqlx::query(sql)
            .bind(owner)
            .bind(id)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(result > 0)
    }
}
