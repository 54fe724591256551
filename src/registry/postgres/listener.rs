//! The LISTEN connection of a PostgreSQL registry: every committed change sends
//! `NOTIFY vocalguard_registry, '<version>'`; this task hears them and wakes the registry's
//! follower. It reconnects after a dropped connection (with a growing pause) and wakes the
//! follower on each reconnect, so changes made while it was away are caught up from the change
//! log.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::watch;
use tokio_postgres::{AsyncMessage, Config, NoTls};

/// The notification channel.
pub const CHANNEL: &str = "vocalguard_registry";

/// What the listener has heard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Heard {
    /// Highest version notified.
    pub version: u64,
    /// Connections made so far (a reconnect may follow missed notifications).
    pub connects: u64,
}

/// Listens until `heard` has no receiver left.
pub async fn run(config: Config, heard: watch::Sender<Heard>) {
    let mut pause = Duration::from_millis(100);
    while !heard.is_closed() {
        match listen(&config, &heard).await {
            Ok(()) => pause = Duration::from_millis(100),
            Err(e) => {
                tracing::debug!(error = %e, "registry notification connection failed");
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
        tokio::time::sleep(pause).await;
    }
}

/// One connection: LISTEN, then forward notifications until it drops.
async fn listen(
    config: &Config,
    heard: &watch::Sender<Heard>,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx.send(n.payload().parse::<u64>().unwrap_or(0)).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "registry notification connection lost");
                    return;
                }
            }
        }
    });
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    heard.send_modify(|h| h.connects += 1);
    tracing::debug!("listening for registry changes");
    while let Some(version) = rx.recv().await {
        heard.send_modify(|h| h.version = h.version.max(version));
    }
    driver.abort();
    tracing::warn!("registry notification connection dropped; reconnecting");
    Ok(())
}
