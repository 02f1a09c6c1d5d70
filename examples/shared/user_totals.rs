//! The pipeline the `backfill` and `live` examples share: a user's spend summed per
//! fixed window. Written once (DESIGN.md P1): the examples differ only in where events
//! come from and where totals go, and the same events give the same totals.

use riffle_engine::prelude::*;
use serde::{Deserialize, Serialize};

/// One input event.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Event {
    /// Who spent.
    pub user_id: String,
    /// When, in milliseconds since the Unix epoch (UTC).
    pub ts: i64,
    /// How much.
    pub amount: i64,
}

/// One output row: a user's total in one window.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Total {
    /// Who spent.
    pub user_id: String,
    /// The window's start, ms UTC.
    pub window_start: i64,
    /// The window's end (exclusive), ms UTC.
    pub window_end: i64,
    /// The amount spent in the window.
    pub total: i64,
}

/// Sums each user's spend per fixed window of `window_ms`: one [`Total`] per user and
/// window, fired once, on time, when the watermark passes the window's end; with
/// `early_ms`, also early panes (accumulating) every `early_ms` of processing time while
/// the window is open.
pub fn user_totals(events: &PCollection<Event>, window_ms: i64, early_ms: Option<i64>) -> PCollection<Total> {
    let windowed = events.window_into(FixedWindows::of_millis(window_ms));
    let windowed = match early_ms {
        Some(ms) => windowed
            .triggering(Trigger::after_watermark().with_early_firings(Trigger::after_processing_time(ms)))
            .accumulating_fired_panes(),
        None => windowed,
    };
    windowed.map(|e| (e.user_id, e.amount)).combine_per_key(Sum::new()).named("SumPerUserPerWindow").par_do(ToTotal)
}

/// Parses a duration with a unit (ms, s, m, h or d) into milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<i64, String> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = n.parse().map_err(|_| format!("{s:?}: expected a number then s, m, h or d"))?;
    let ms = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{s:?}: the unit must be ms, s, m, h or d")),
    };
    if n <= 0 {
        return Err(format!("{s:?}: a window is longer than zero"));
    }
    n.checked_mul(ms).ok_or_else(|| format!("{s:?}: too long (at most {} days)", i64::MAX / 86_400_000))
}

/// Attaches the window to each total.
#[derive(Clone)]
struct ToTotal;

impl DoFn for ToTotal {
    type In = (String, i64);
    type Out = Total;
    fn process(&mut self, (user_id, total): &(String, i64), ctx: &mut ProcessContext<'_, Total>) {
        let Window::Interval { start, end } = ctx.window() else { unreachable!("fixed windows") };
        ctx.output(Total {
            user_id: user_id.clone(),
            window_start: start.millis(),
            window_end: end.millis(),
            total: *total,
        });
    }
}
