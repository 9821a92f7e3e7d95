//! The document store: documents and their passages in one SQLite database
//! (WAL mode), with an FTS5 index over the passages ranked by BM25.
//!
//! Every call is synchronous and short; callers on the async executor run
//! them on actix's blocking threads. One connection behind a mutex serves
//! all of them: each call is a few milliseconds, and SQLite serialises
//! writers anyway.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, ErrorCode, OptionalExtension, TransactionBehavior};

use super::passages::passages;
use super::query::match_expression;

/// How long a call waits for another process's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS documents (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    text TEXT NOT NULL,
    chars INTEGER NOT NULL,
    passages INTEGER NOT NULL,
    created INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS passages (
    id INTEGER PRIMARY KEY,
    document TEXT NOT NULL,
    start INTEGER NOT NULL,
    end INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS passages_by_document ON passages(document);
CREATE VIRTUAL TABLE IF NOT EXISTS passages_fts
    USING fts5(text, tokenize = 'porter unicode61 remove_diacritics 2');
";

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no document with id {0:?}")]
    NotFound(String),
    #[error("the store holds its limit of {0} documents; delete one first")]
    Full(usize),
    /// Locked by another process, read-only, disk full: retrying later may work.
    #[error("the document store is unavailable: {0}")]
    Unavailable(String),
    #[error("document store error: {0}")]
    Internal(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> StoreError {
        let code = error.sqlite_error_code();
        match code {
            Some(
                ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::ReadOnly
                | ErrorCode::DiskFull
                | ErrorCode::CannotOpen
                | ErrorCode::SystemIoFailure
                | ErrorCode::PermissionDenied,
            ) => StoreError::Unavailable(error.to_string()),
            _ => StoreError::Internal(error.to_string()),
        }
    }
}

/// A stored document without its text.
#[derive(Debug, Clone, PartialEq)]
pub struct DocumentInfo {
    pub id: String,
    pub title: String,
    /// Length in code points.
    pub chars: usize,
    pub passages: usize,
    /// Seconds since the Unix epoch.
    pub created: u64,
}

/// A passage found for a question: where it is, its text and its BM25
/// score (higher is better).
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub document: String,
    pub start: usize,
    pub end: usize,
    pub text: String,
    pub score: f64,
}

/// Which documents a search looks in.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    One(&'a str),
    All,
}

/// What the store holds, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StoreSize {
    pub documents: usize,
    pub passages: usize,
    pub chars: usize,
}

pub struct DocumentStore {
    connection: Mutex<Connection>,
    passage_chars: usize,
    max_documents: usize,
}

impl DocumentStore {
    /// Opens (creating it and its directory if needed) the database at `path`.
    pub fn open(
        path: &Path,
        passage_chars: usize,
        max_documents: usize,
    ) -> Result<DocumentStore, StoreError> {
        if let Some(directory) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(directory).map_err(|error| {
                StoreError::Unavailable(format!("cannot create {}: {error}", directory.display()))
            })?;
        }
        let connection = Connection::open(path)?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        DocumentStore::with_connection(connection, passage_chars, max_documents)
    }

    /// A store in memory, gone when dropped (for a long request context).
    pub fn in_memory(passage_chars: usize) -> Result<DocumentStore, StoreError> {
        DocumentStore::with_connection(Connection::open_in_memory()?, passage_chars, usize::MAX)
    }

    fn with_connection(
        connection: Connection,
        passage_chars: usize,
        max_documents: usize,
    ) -> Result<DocumentStore, StoreError> {
        connection.busy_timeout(BUSY_TIMEOUT)?;
        connection.execute_batch(SCHEMA)?;
        Ok(DocumentStore {
            connection: Mutex::new(connection),
            passage_chars: passage_chars.max(1),
            max_documents,
        })
    }

    fn connection(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (an open
        // transaction is rolled back when dropped), so the lock is reusable.
        self.connection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stores a document under a new id, in one transaction.
    pub fn add(&self, title: &str, text: &str) -> Result<DocumentInfo, StoreError> {
        let id = format!("doc-{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
        self.put(&id, title, text, true)
    }

    /// Stores `text` under `id` unless it is already stored with this title
    /// and text (start-up loads the reference document this way).
    pub fn ensure(&self, id: &str, title: &str, text: &str) -> Result<DocumentInfo, StoreError> {
        let stored: Option<(String, String)> = self
            .connection()
            .query_row(
                "SELECT title, text FROM documents WHERE id = ?1",
                [id],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        match stored {
            Some((stored_title, stored_text)) if stored_title == title && stored_text == text => {
                self.info(id)
            }
            _ => self.put(id, title, text, false),
        }
    }

    /// Replaces (or creates) `id` with `text` and its passages atomically.
    fn put(
        &self,
        id: &str,
        title: &str,
        text: &str,
        count_limit: bool,
    ) -> Result<DocumentInfo, StoreError> {
        let spans = passages(text, self.passage_chars);
        let chars = text.chars().count();
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        let mut connection = self.connection();
        let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if count_limit {
            let count: i64 =
                transaction.query_row("SELECT count(*) FROM documents", [], |row| row.get(0))?;
            if usize::try_from(count).unwrap_or(usize::MAX) >= self.max_documents {
                return Err(StoreError::Full(self.max_documents));
            }
        }
        delete_in(&transaction, id)?;
        transaction.execute(
            "INSERT INTO documents (id, title, text, chars, passages, created)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                id,
                title,
                text,
                chars as i64,
                spans.len() as i64,
                created as i64
            ],
        )?;
        {
            let mut passage = transaction.prepare_cached(
                "INSERT INTO passages (document, start, end) VALUES (?1, ?2, ?3)",
            )?;
            let mut indexed = transaction
                .prepare_cached("INSERT INTO passages_fts (rowid, text) VALUES (?1, ?2)")?;
            for span in &spans {
                passage.execute(params![id, span.start as i64, span.end as i64])?;
                let row = transaction.last_insert_rowid();
                indexed.execute(params![row, span.text(text)])?;
            }
        }
        transaction.commit()?;
        Ok(DocumentInfo {
            id: id.to_string(),
            title: title.to_string(),
            chars,
            passages: spans.len(),
            created,
        })
    }

    pub fn info(&self, id: &str) -> Result<DocumentInfo, StoreError> {
        self.connection()
            .query_row(
                "SELECT id, title, chars, passages, created FROM documents WHERE id = ?1",
                [id],
                info_of,
            )
            .optional()?
            .ok_or_else(|| StoreError::NotFound(id.to_string()))
    }

    /// Every document, oldest first.
    pub fn list(&self) -> Result<Vec<DocumentInfo>, StoreError> {
        let connection = self.connection();
        let mut statement = connection.prepare(
            "SELECT id, title, chars, passages, created FROM documents ORDER BY created, rowid",
        )?;
        let rows = statement.query_map([], info_of)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The document's title and text.
    pub fn get(&self, id: &str) -> Result<(DocumentInfo, String), StoreError> {
        self.connection()
            .query_row(
                "SELECT id, title, chars, passages, created, text FROM documents WHERE id = ?1",
                [id],
                |row| Ok((info_of(row)?, row.get(5)?)),
            )
            .optional()?
            .ok_or_else(|| StoreError::NotFound(id.to_string()))
    }

    pub fn delete(&self, id: &str) -> Result<(), StoreError> {
        let mut connection = self.connection();
        let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if !delete_in(&transaction, id)? {
            return Err(StoreError::NotFound(id.to_string()));
        }
        transaction.commit()?;
        Ok(())
    }

    /// The `limit` passages that best match `question`, best first. A
    /// question without content words finds nothing; an unknown document
    /// in `scope` is `NotFound`.
    pub fn search(
        &self,
        question: &str,
        scope: Scope<'_>,
        limit: usize,
    ) -> Result<Vec<Hit>, StoreError> {
        let connection = self.connection();
        let document = match scope {
            Scope::One(id) => {
                let known: Option<i64> = connection
                    .query_row("SELECT 1 FROM documents WHERE id = ?1", [id], |row| {
                        row.get(0)
                    })
                    .optional()?;
                if known.is_none() {
                    return Err(StoreError::NotFound(id.to_string()));
                }
                Some(id)
            }
            Scope::All => None,
        };
        let Some(expression) = match_expression(question) else {
            return Ok(Vec::new());
        };
        let mut statement = connection.prepare_cached(
            "SELECT p.document, p.start, p.end, passages_fts.text, bm25(passages_fts) AS rank
             FROM passages_fts JOIN passages p ON p.id = passages_fts.rowid
             WHERE passages_fts MATCH ?1 AND (?2 IS NULL OR p.document = ?2)
             ORDER BY rank LIMIT ?3",
        )?;
        let hits = statement.query_map(
            params![
                expression,
                document,
                i64::try_from(limit).unwrap_or(i64::MAX)
            ],
            |row| {
                Ok(Hit {
                    document: row.get(0)?,
                    start: usize::try_from(row.get::<_, i64>(1)?).unwrap_or(0),
                    end: usize::try_from(row.get::<_, i64>(2)?).unwrap_or(0),
                    text: row.get(3)?,
                    // FTS5's bm25() is lower for better matches.
                    score: -row.get::<_, f64>(4)?,
                })
            },
        )?;
        Ok(hits.collect::<Result<_, _>>()?)
    }

    pub fn size(&self) -> Result<StoreSize, StoreError> {
        Ok(self.connection().query_row(
            "SELECT count(*), coalesce(sum(passages), 0), coalesce(sum(chars), 0) FROM documents",
            [],
            |row| {
                let count = |index| row.get::<_, i64>(index).map(|n| n.max(0) as usize);
                Ok(StoreSize {
                    documents: count(0)?,
                    passages: count(1)?,
                    chars: count(2)?,
                })
            },
        )?)
    }
}

fn info_of(row: &rusqlite::Row<'_>) -> rusqlite::Result<DocumentInfo> {
    let count = |index| row.get::<_, i64>(index).map(|n| n.max(0) as u64);
    Ok(DocumentInfo {
        id: row.get(0)?,
        title: row.get(1)?,
        chars: count(2)? as usize,
        passages: count(3)? as usize,
        created: count(4)?,
    })
}

/// Removes `id` and its passages; false when it was not stored.
fn delete_in(transaction: &rusqlite::Transaction<'_>, id: &str) -> Result<bool, StoreError> {
    transaction.execute(
        "DELETE FROM passages_fts WHERE rowid IN (SELECT id FROM passages WHERE document = ?1)",
        [id],
    )?;
    transaction.execute("DELETE FROM passages WHERE document = ?1", [id])?;
    Ok(transaction.execute("DELETE FROM documents WHERE id = ?1", [id])? > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# Trees\n\nRandom forests average many decision trees.\n\n\
                        ## Margins\n\nSupport vector machines were introduced by Cortes and Vapnik.\n\n\
                        Gradient boosting corrects the errors of earlier trees.";

    fn store() -> DocumentStore {
        DocumentStore::in_memory(1000).expect("store")
    }

    #[test]
    fn search_ranks_the_passage_that_shares_the_rare_words_first() {
        let store = store();
        let info = store.add("ml", TEXT).expect("added");
        assert_eq!(info.passages, 3);
        let hits = store
            .search("Who introduced support vector machines?", Scope::All, 3)
            .expect("search");
        assert_eq!(hits[0].document, info.id);
        assert!(hits[0].text.contains("Cortes and Vapnik"), "{hits:?}");
        let chars: Vec<char> = TEXT.chars().collect();
        assert_eq!(
            chars[hits[0].start..hits[0].end].iter().collect::<String>(),
            hits[0].text
        );
        assert!(hits.windows(2).all(|pair| pair[0].score >= pair[1].score));
    }

    #[test]
    fn stemming_matches_other_forms_of_a_word() {
        let store = store();
        store.add("ml", TEXT).expect("added");
        let hits = store
            .search("What does boosting correct?", Scope::All, 1)
            .expect("search");
        assert!(hits[0].text.starts_with("Gradient boosting"), "{hits:?}");
    }

    #[test]
    fn a_scope_of_one_document_ignores_the_others() {
        let store = store();
        let first = store.add("one", TEXT).expect("added");
        let second = store
            .add(
                "two",
                "Vapnik and Cortes wrote about support vector machines.",
            )
            .expect("added");
        let hits = store
            .search("support vector machines", Scope::One(&second.id), 5)
            .expect("search");
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].document, second.id);
        let all = store
            .search("support vector machines", Scope::All, 5)
            .expect("search");
        assert!(all.iter().any(|hit| hit.document == first.id));
        assert!(matches!(
            store.search("trees", Scope::One("doc-missing"), 5),
            Err(StoreError::NotFound(_))
        ));
    }

    #[test]
    fn delete_removes_the_document_and_its_passages() {
        let store = store();
        let info = store.add("ml", TEXT).expect("added");
        store.delete(&info.id).expect("deleted");
        assert!(store
            .search("trees", Scope::All, 5)
            .expect("search")
            .is_empty());
        assert_eq!(store.size().expect("size"), StoreSize::default());
        assert!(matches!(
            store.delete(&info.id),
            Err(StoreError::NotFound(_))
        ));
    }

    #[test]
    fn ensure_is_idempotent_and_replaces_changed_text() {
        let store = store();
        store.ensure("reference", "ref", TEXT).expect("stored");
        store.ensure("reference", "ref", TEXT).expect("again");
        assert_eq!(store.size().expect("size").documents, 1);
        assert_eq!(store.size().expect("size").passages, 3);
        store
            .ensure("reference", "ref", "Only one passage now.")
            .expect("replaced");
        assert_eq!(
            store.size().expect("size"),
            StoreSize {
                documents: 1,
                passages: 1,
                chars: 21
            }
        );
        assert!(store
            .search("trees", Scope::All, 5)
            .expect("search")
            .is_empty());
    }

    #[test]
    fn the_count_limit_refuses_one_more() {
        let store =
            DocumentStore::with_connection(Connection::open_in_memory().expect("memory"), 1000, 2)
                .expect("store");
        store.add("a", "one").expect("first");
        store.add("b", "two").expect("second");
        assert!(matches!(store.add("c", "three"), Err(StoreError::Full(2))));
        // The reference document is not counted against the limit.
        store.ensure("reference", "r", "three").expect("reference");
    }

    #[test]
    fn a_question_without_content_words_finds_nothing() {
        let store = store();
        store.add("ml", TEXT).expect("added");
        assert!(store
            .search("who is it?", Scope::All, 5)
            .expect("search")
            .is_empty());
    }
}
