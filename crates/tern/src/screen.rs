//! Screening and greylisting in the server (docs/SCREENING.md): builds the
//! [`tern_screen::Screen`] the SMTP sessions use from `[screen]` and `[dns]`, loads the
//! greylist from `<data_dir>/greylist.json` at start and saves it every minute (when it
//! changed) and at shutdown.
//!
//! The lists are asked through a resolver of their own built from `[dns]` (the same
//! name servers as every other lookup, so the tests' DNS server answers them), each
//! query bounded by `dns.timeout_ms`. hickory's cache is off: answers are cached by
//! `tern-screen` by their TTL. A greylist file that cannot be read is moved aside
//! (event 2187) and the start goes on; one that cannot be written is reported (event
//! 2188) and tried again at the next save.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::ResolveHosts;
use tern_events::{EventLog, catalog, fields};
use tern_screen::persist::LoadError;
use tern_screen::{DnsLists, MemoryGreylist, MemoryListCache, MemoryPassCache, Screen};

use crate::config::{Config, DnsSection};

/// How often the greylist is saved when it changed.
const SAVE_EVERY: Duration = Duration::from_secs(60);
/// Clients the pass cache remembers.
const PASS_CACHE_CLIENTS: usize = 200_000;
/// List answers cached.
const LIST_CACHE_ANSWERS: usize = 200_000;

/// The screening of a running server.
pub struct Screening {
    /// What the sessions use.
    pub screen: Arc<Screen>,
    greylist: Arc<MemoryGreylist>,
    dir: PathBuf,
    events: EventLog,
    saver: tokio::task::JoinHandle<()>,
}

/// The lists' resolver: `[dns]`'s servers, one query bounded by its timeout.
fn lists_resolver(dns: &DnsSection) -> Option<TokioResolver> {
    let mut builder = tern_route::dns::resolver_builder(&dns.nameservers).ok()?;
    let opts = builder.options_mut();
    let timeout = Duration::from_millis(dns.timeout_ms.max(1));
    opts.timeout = (timeout / 2).max(Duration::from_millis(50));
    opts.attempts = 1;
    opts.cache_size = 0;
    if !dns.nameservers.is_empty() {
        opts.use_hosts_file = ResolveHosts::Never;
    }
    builder.build().ok()
}

impl Screening {
    /// Builds the screen and loads the greylist (inside a tokio runtime). In a cluster
    /// (`cluster`), the greylist, the list answers and the pass cache are shared through
    /// Redis, each falling back to its in-process store while Redis is unreachable
    /// (docs/cluster/state.md); the local greylist is still loaded and saved.
    pub fn start(
        config: &Config,
        events: &EventLog,
        cluster: Option<&tern_cluster::Cluster>,
    ) -> Screening {
        let timeout = Duration::from_millis(config.dns.timeout_ms.max(1));
        let lists = lists_resolver(&config.dns).map(|r| {
            let cache: Arc<dyn tern_screen::ListCache> = match cluster {
                Some(c) => Arc::new(tern_cluster::screening::SharedListCache::new(
                    c.clone(),
                    LIST_CACHE_ANSWERS,
                )),
                None => Arc::new(MemoryListCache::new(LIST_CACHE_ANSWERS)),
            };
            DnsLists::new(r, cache, timeout)
        });
        let greylist = Arc::new(MemoryGreylist::default());
        let dir = config.server.data_dir.clone();
        let settings = tern_screen::Settings::of(&config.screen);
        let now = tern_watchdog::clock::unix_ms();
        match greylist.load(&dir, &settings.policy(), now) {
            Ok(loaded) if loaded.triplets + loaded.networks > 0 => events.emit(
                &catalog::SCREEN_GREYLIST_LOADED,
                fields!("triplets" => loaded.triplets, "networks" => loaded.networks),
            ),
            Ok(_) => {}
            Err(LoadError::Corrupt {
                path,
                reason,
                moved_to,
            }) => events.emit(
                &catalog::SCREEN_GREYLIST_CORRUPT,
                fields!(
                    "path" => path.display(),
                    "reason" => reason,
                    "moved_to" => moved_to.map(|p| p.display().to_string()).unwrap_or_else(|| "(not moved)".into()),
                ),
            ),
            Err(e) => events.emit(
                &catalog::SCREEN_GREYLIST_CORRUPT,
                fields!("path" => dir.join(tern_screen::persist::FILE_NAME).display(), "reason" => e, "moved_to" => "(not moved)"),
            ),
        }
        let (pass, store): (
            Arc<dyn tern_screen::PassCache>,
            Arc<dyn tern_screen::GreylistStore>,
        ) = match cluster {
            Some(c) => (
                Arc::new(tern_cluster::screening::SharedPassCache::new(
                    c.clone(),
                    PASS_CACHE_CLIENTS,
                )),
                Arc::new(tern_cluster::screening::SharedGreylist::new(
                    c.clone(),
                    Arc::clone(&greylist),
                )),
            ),
            None => (
                Arc::new(MemoryPassCache::new(PASS_CACHE_CLIENTS)),
                Arc::clone(&greylist) as Arc<dyn tern_screen::GreylistStore>,
            ),
        };
        let screen = Arc::new(Screen::new(&config.screen, lists, pass, store));
        let saver = {
            let greylist = Arc::clone(&greylist);
            let dir = dir.clone();
            let events = events.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(SAVE_EVERY);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                every.tick().await;
                loop {
                    every.tick().await;
                    save(&greylist, &dir, &events).await;
                }
            })
        };
        Screening {
            screen,
            greylist,
            dir,
            events: events.clone(),
            saver,
        }
    }

    /// Stops the periodic save and saves one last time.
    pub async fn stop(self) {
        self.saver.abort();
        save(&self.greylist, &self.dir, &self.events).await;
    }
}

/// Saves the greylist on the blocking pool; a failure is event 2188.
async fn save(greylist: &Arc<MemoryGreylist>, dir: &std::path::Path, events: &EventLog) {
    let g = Arc::clone(greylist);
    let d = dir.to_path_buf();
    let result =
        tokio::task::spawn_blocking(move || g.save(&d, tern_watchdog::clock::unix_ms())).await;
    let error = match result {
        Ok(Ok(_)) => return,
        Ok(Err(e)) => e.to_string(),
        Err(e) => e.to_string(),
    };
    events.emit(
        &catalog::SCREEN_GREYLIST_SAVE_FAILED,
        fields!("path" => dir.join(tern_screen::persist::FILE_NAME).display(), "error" => error),
    );
}
