//! Argon2id password hashes (PHC strings) for local users. Hashing is CPU
//! work by design: the server checks passwords on a [`CheckPool`], the CLI
//! with `spawn_blocking`.

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier, password_hash::SaltString};

use prometheus_client::metrics::counter::Counter;

use super::crypto::CryptoError;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("passwords must be 8 to 1024 characters")]
    Policy,
    #[error("cannot hash the password")]
    Hash,
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

fn argon2() -> Argon2<'static> {
    // OWASP baseline: m = 19 MiB, t = 2, p = 1.
    let params = argon2::Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
}

pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    let length = password.chars().count();
    if !(8..=1024).contains(&length) {
        return Err(PasswordError::Policy);
    }
    let mut salt = [0u8; 16];
    aws_lc_rs::rand::fill(&mut salt).map_err(|_| CryptoError::Random)?;
    let salt = SaltString::encode_b64(&salt).map_err(|_| PasswordError::Hash)?;
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|_| PasswordError::Hash)
}

pub fn verify_password(password: &str, phc: &str) -> bool {
    if password.len() > 4096 {
        return false;
    }
    match PasswordHash::new(phc) {
        Ok(hash) => argon2().verify_password(password.as_bytes(), &hash).is_ok(),
        Err(_) => false,
    }
}

/// A hash of a random password, verified against when the user name is
/// unknown so that the answer takes the same time either way.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        let password = super::crypto::random_token(24).unwrap_or_else(|_| "decoy-password".into());
        hash_password(&password).unwrap_or_default()
    })
}

/// A readable random password for the first admin.
pub fn generate_password() -> Result<String, CryptoError> {
    super::crypto::random_token(15)
}

type Check = Box<dyn FnOnce() + Send>;

/// Checks that may wait per pool thread; beyond that a sign-in is refused
/// at once instead of queueing CPU work without bound (each waiting check
/// is also a held connection and, once running, 19 MiB).
const QUEUE_PER_THREAD: usize = 16;

/// The pool's queue is full: too many sign-ins at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many password checks are waiting")]
pub struct PoolBusy;

/// Password checks on a few dedicated threads. Each Argon2id check holds
/// 19 MiB, and glibc keeps a freed block in the arena of the thread that
/// used it: checks spread over tokio's (up to 512) blocking threads left
/// 19 MiB behind on each (2.5 GB after a 16-way login burst). A fixed set of
/// threads bounds that to threads x 19 MiB; more threads than cores would
/// not finish a CPU-bound hash sooner anyway. The queue in front of them is
/// bounded too.
pub struct CheckPool {
    jobs: std::sync::mpsc::SyncSender<Check>,
    /// Checks run so far (`mcpgate_password_checks_total`).
    checks: Counter,
}

impl CheckPool {
    pub fn new(threads: usize) -> CheckPool {
        Self::with_counter(threads, Counter::default())
    }

    /// A pool that counts the checks it runs on `checks`.
    pub fn with_counter(threads: usize, checks: Counter) -> CheckPool {
        let threads = threads.max(1);
        let (jobs, queue) = std::sync::mpsc::sync_channel::<Check>(threads * QUEUE_PER_THREAD);
        let queue = std::sync::Arc::new(std::sync::Mutex::new(queue));
        for i in 0..threads {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("mcpgate-password-{i}"))
                .spawn(move || {
                    loop {
                        // Hold the lock only to take the next job.
                        let job = match queue.lock() {
                            Ok(receiver) => receiver.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a password-check thread");
            }
        }
        CheckPool { jobs, checks }
    }

    /// [`verify_password`] on the pool; `false` if the pool is gone,
    /// [`PoolBusy`] if its queue is full.
    pub async fn verify(&self, password: String, phc: String) -> Result<bool, PoolBusy> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let checks = self.checks.clone();
        let job: Check = Box::new(move || {
            checks.inc();
            let _ = reply.send(verify_password(&password, &phc));
        });
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(std::sync::mpsc::TrySendError::Full(_)) => return Err(PoolBusy),
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return Ok(false),
        }
        Ok(answer.await.unwrap_or(false))
    }

    /// Count the checks from now on on `checks` (the metrics registry's).
    pub fn count_on(&mut self, checks: Counter) {
        self.checks = checks;
    }

    /// How many checks the pool has run.
    pub fn checks_run(&self) -> u64 {
        self.checks.get()
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn the_check_pool_verifies_on_its_threads() {
        let pool = CheckPool::new(2);
        let phc = hash_password("correct horse").unwrap();
        let checks = (0..6).map(|i| {
            let password = if i % 2 == 0 {
                "correct horse"
            } else {
                "wrong horse!"
            };
            pool.verify(password.to_owned(), phc.clone())
        });
        let results = futures::future::join_all(checks).await;
        assert_eq!(
            results,
            vec![
                Ok(true),
                Ok(false),
                Ok(true),
                Ok(false),
                Ok(true),
                Ok(false)
            ]
        );
        assert_eq!(pool.checks_run(), 6);
    }

    #[tokio::test]
    async fn a_full_queue_refuses_instead_of_growing() {
        let pool = CheckPool::new(1);
        // Hold the only thread so nothing leaves the queue.
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let (started, running) = std::sync::mpsc::channel::<()>();
        pool.jobs
            .try_send(Box::new(move || {
                let _ = started.send(());
                let _ = wait.recv();
            }))
            .unwrap();
        running.recv().unwrap();
        let phc = hash_password("correct horse").unwrap();
        let waiting: Vec<_> = (0..QUEUE_PER_THREAD + 1)
            .map(|_| Box::pin(pool.verify("wrong horse!".to_owned(), phc.clone())))
            .collect();
        let mut waiting = waiting;
        // Poll each once: they enqueue (or are refused) on their first poll.
        let mut refused = 0;
        for fut in waiting.iter_mut() {
            if let std::task::Poll::Ready(Err(PoolBusy)) = futures::poll!(fut.as_mut()) {
                refused += 1;
            }
        }
        assert_eq!(refused, 1);
        release.send(()).unwrap();
        drop(waiting);
    }

    use super::*;

    #[test]
    fn hash_and_verify() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong horse", &h));
        assert!(!verify_password("x", "not a hash"));
        assert!(hash_password("short").is_err());
    }
}
