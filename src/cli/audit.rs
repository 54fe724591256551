//! `vocalguard audit`: reads the registry's audit trail from a running server
//! (`ListAuditEvents`), following page tokens up to `--limit` events.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::client::{failed, runtime, Connection};
use crate::proto::{AuditAction, AuditEvent, ListAuditEventsRequest, ListAuditEventsResponse};

/// Most events asked for in one call (the server's page cap).
const MAX_PAGE: usize = 1000;

/// `vocalguard audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only the events of this artist.
    #[arg(long, value_name = "ARTIST_ID")]
    artist: Option<String>,
    /// Only events after this sequence number (the last one seen, to follow the trail).
    #[arg(long, default_value_t = 0, value_name = "SEQUENCE")]
    after: u64,
    /// Most events to print.
    #[arg(long, default_value_t = 100, value_name = "N")]
    limit: usize,
    #[command(flatten)]
    conn: Connection,
}

/// Runs `vocalguard audit`: prints one line per event (or the events as JSON with `--json`),
/// and says how to go on when more events follow.
pub fn run(args: AuditArgs) -> Result<ExitCode> {
    anyhow::ensure!(args.limit > 0, "--limit must be at least 1");
    let rt = runtime()?;
    let mut client = args.conn.registry(&rt)?;
    let mut events = Vec::new();
    let mut next_page_token = String::new();
    loop {
        let wanted = (args.limit - events.len()).min(MAX_PAGE);
        let page = rt
            .block_on(client.list_audit_events(ListAuditEventsRequest {
                page_size: wanted as u32,
                page_token: next_page_token.clone(),
                after_sequence: args.after,
                artist_id: args.artist.clone().unwrap_or_default(),
            }))
            .map_err(failed("ListAuditEvents"))?
            .into_inner();
        events.extend(page.events);
        next_page_token = page.next_page_token;
        if next_page_token.is_empty() || events.len() >= args.limit {
            break;
        }
    }
    let reply = ListAuditEventsResponse {
        events,
        next_page_token,
    };
    args.conn.print(&reply, |r| {
        let mut lines: Vec<String> = r.events.iter().map(event_line).collect();
        if lines.is_empty() {
            lines.push("no events".into());
        }
        if let (false, Some(last)) = (r.next_page_token.is_empty(), r.events.last()) {
            lines.push(format!("more events follow: --after {}", last.sequence));
        }
        lines.join("\n")
    })
}

/// `SEQ  TIME  ACTOR  REQUEST  ACTION  ARTIST  [voiceprint V | party P]  vVERSION`.
fn event_line(e: &AuditEvent) -> String {
    let action = AuditAction::try_from(e.action).map_or("?", |a| a.as_str_name());
    let action = action.strip_prefix("AUDIT_ACTION_").unwrap_or(action);
    let subject = match (e.voiceprint_id.as_str(), e.party_id.as_str()) {
        ("", "") => String::new(),
        ("", party) => format!("\tparty {party}"),
        (voiceprint, _) => format!("\tvoiceprint {voiceprint}"),
    };
    format!(
        "{}\t{}\t{}\t{}\t{}\t{}{}\tversion {}",
        e.sequence,
        utc_timestamp(e.time_unix_ms),
        e.actor,
        e.request_id,
        action.to_lowercase(),
        e.artist_id,
        subject,
        e.registry_version
    )
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for milliseconds since the Unix epoch (proleptic Gregorian).
fn utc_timestamp(unix_ms: i64) -> String {
    let (days, ms_of_day) = (
        unix_ms.div_euclid(86_400_000),
        unix_ms.rem_euclid(86_400_000),
    );
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (s, ms) = (ms_of_day / 1000, ms_of_day % 1000);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

#[cfg(test)]
mod tests {
    use super::utc_timestamp;

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc_timestamp(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(utc_timestamp(1_764_047_446_123), "2025-11-25T05:10:46.123Z");
        assert_eq!(utc_timestamp(-1), "1969-12-31T23:59:59.999Z");
    }
}
