//! The limiter's plan: the latest instant each waiting refresh may start so that every refresh
//! still finishes by its deadline, given the slots, the spacing between starts and the estimated
//! fetch duration.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What the plan assumes of the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Capacity {
    /// Fetches at once (at least 1).
    pub(super) slots: usize,
    /// The least time between two starts (zero: no rate).
    pub(super) spacing: Duration,
    /// How long one fetch is expected to take.
    pub(super) duration: Duration,
}

/// The latest starts of refreshes whose deadlines are `deadlines`, ascending (given as an
/// iterator the plan walks from the last); the result is in the same order and ascending too,
/// so the refreshes due at any instant are a prefix. Instants are [`nanos`]: a turn may run over
/// every ticket, and plain integers keep it cheap (`SystemTime` arithmetic took most of a turn).
///
/// Scheduling backwards in deadline order: refresh `i` (of `n`) must finish by its deadline, the
/// refresh `slots` places after it in deadline order must be able to start once it finished (they
/// cannot all run at once), and the next one must start at least `spacing` after it:
/// `L[i] = min(D[i] - d, L[i + slots] - d, L[i + 1] - spacing)`. For fetches of one duration this
/// is the latest feasible schedule: starting each refresh at `L[i]` never runs more than `slots`
/// at once and finishes each by its deadline, and no refresh can start later without another
/// missing its deadline.
pub(super) fn latest_starts<I>(deadlines: I, capacity: Capacity) -> Vec<u64>
where
    I: DoubleEndedIterator<Item = u64> + ExactSizeIterator,
{
    let n = deadlines.len();
    let slots = capacity.slots.max(1);
    let duration = duration_nanos(capacity.duration);
    let spacing = duration_nanos(capacity.spacing);
    let mut starts = vec![0u64; n];
    for (i, deadline) in (0..n).rev().zip(deadlines.rev()) {
        let mut latest = deadline.saturating_sub(duration);
        if let Some(&later) = starts.get(i + slots) {
            latest = latest.min(later.saturating_sub(duration));
        }
        if let Some(&next) = starts.get(i + 1) {
            latest = latest.min(next.saturating_sub(spacing));
        }
        starts[i] = latest;
    }
    starts
}

/// How many of the refreshes whose deadlines are `deadlines` (ascending) are due at `now`, and the
/// next planned start after those: what [`latest_starts`] of them all says, read from the first
/// tickets only when the others cannot matter.
///
/// `L[i]` unrolled is the least, over every later refresh `j`, of `D[j] - d` less the longest
/// chain of starts from `i` to `j` ([`reach`]), so tickets whose deadlines lie beyond every chain
/// the plan can form cannot move the first starts: the latest starts of the first `m` tickets
/// alone are exact up to the first one after `now` when that one is no later than `D[m] - d -
/// reach(n - 1)`. The window starts with the tickets due by `now + d + reach(n - 1)` (the fewest
/// that can pass that test) and doubles until it passes, or holds every ticket. Without a rate
/// it is the next few minutes of tickets; when that horizon spans half of the deadlines or more
/// (a rate near the load), the whole plan is computed at once.
pub(super) fn due<I>(deadlines: I, capacity: Capacity, now: u64) -> (usize, Option<u64>)
where
    I: DoubleEndedIterator<Item = u64> + ExactSizeIterator + Clone,
{
    let n = deadlines.len();
    let duration = duration_nanos(capacity.duration);
    let longest = reach(n.saturating_sub(1), capacity);
    let horizon = now.saturating_add(duration).saturating_add(longest);
    let (Some(first), Some(last)) = (deadlines.clone().next(), deadlines.clone().next_back())
    else {
        return (0, None);
    };
    if horizon >= first + (last - first) / 2 {
        return first_due(&latest_starts(deadlines, capacity), now);
    }
    let mut deadlines = deadlines;
    let mut window = Vec::new();
    let mut beyond = None;
    for deadline in deadlines.by_ref() {
        if deadline > horizon && !window.is_empty() {
            beyond = Some(deadline);
            break;
        }
        window.push(deadline);
    }
    loop {
        let (due, next) = first_due(&latest_starts(window.iter().copied(), capacity), now);
        let Some(first_left_out) = beyond else {
            return (due, next);
        };
        let bound = first_left_out
            .saturating_sub(duration)
            .saturating_sub(longest);
        if next.is_some_and(|next| next <= bound) {
            return (due, next);
        }
        let more = window.len();
        window.push(first_left_out);
        window.extend(deadlines.by_ref().take(more - 1));
        beyond = deadlines.next();
    }
}

/// How many of `starts` (ascending) are at or before `now`, and the first one after.
fn first_due(starts: &[u64], now: u64) -> (usize, Option<u64>) {
    let due = starts.partition_point(|&start| start <= now);
    (due, starts.get(due).copied())
}

/// The most the plan's chains of starts can push a start back over `k` places in deadline order:
/// a step `slots` places on costs a fetch's duration, a step one place on costs the spacing, and
/// the dearer of the two per place is taken wherever it fits.
fn reach(k: usize, capacity: Capacity) -> u64 {
    let slots = capacity.slots.max(1) as u64;
    let duration = duration_nanos(capacity.duration);
    let spacing = duration_nanos(capacity.spacing);
    let k = k as u64;
    if duration >= spacing.saturating_mul(slots) {
        (k / slots)
            .saturating_mul(duration)
            .saturating_add((k % slots).saturating_mul(spacing))
    } else {
        k.saturating_mul(spacing)
    }
}

/// `t` in nanoseconds since the epoch: an instant before it counts as the epoch, one past 2554
/// as 2554.
pub(super) fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, duration_nanos)
}

/// The instant `nanos` nanoseconds after the epoch.
pub(super) fn instant(nanos: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(nanos)
}

fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    fn secs(starts: &[u64]) -> Vec<u64> {
        starts.iter().map(|s| s / 1_000_000_000).collect()
    }

    fn capacity(slots: usize, spacing: u64, duration: u64) -> Capacity {
        Capacity {
            slots,
            spacing: Duration::from_secs(spacing),
            duration: Duration::from_secs(duration),
        }
    }

    #[test]
    fn refreshes_with_room_start_one_fetch_before_their_deadline() {
        let starts = latest_starts(
            [t(100), t(200), t(300)].map(nanos).into_iter(),
            capacity(4, 0, 2),
        );
        assert_eq!(secs(&starts), [98, 198, 298]);
    }

    #[test]
    fn refreshes_sharing_a_deadline_are_stacked_back_by_slots() {
        let starts = latest_starts([t(1000); 5].map(nanos).into_iter(), capacity(2, 0, 10));
        // The last two finish at the deadline, the two before them 10 s earlier, the first 10 s
        // before those.
        assert_eq!(secs(&starts), [970, 980, 980, 990, 990]);
    }

    #[test]
    fn a_rate_spaces_the_starts_back_from_the_deadline() {
        let starts = latest_starts([t(1000); 4].map(nanos).into_iter(), capacity(10, 5, 1));
        assert_eq!(secs(&starts), [984, 989, 994, 999]);
    }

    #[test]
    fn an_infeasible_plan_starts_at_the_epoch_rather_than_overflowing() {
        let starts = latest_starts([t(5); 3].map(nanos).into_iter(), capacity(1, 0, 10));
        assert_eq!(secs(&starts), [0, 0, 0]);
    }

    /// Runs the plan forwards: each refresh starting at its latest start and taking `duration`.
    fn check_feasible(deadlines: &[SystemTime], capacity: Capacity) {
        let starts: Vec<SystemTime> = latest_starts(deadlines.iter().map(|&d| nanos(d)), capacity)
            .into_iter()
            .map(instant)
            .collect();
        assert!(starts.windows(2).all(|w| w[0] <= w[1]), "starts not sorted");
        for (i, (&start, &deadline)) in starts.iter().zip(deadlines).enumerate() {
            assert!(start + capacity.duration <= deadline, "refresh {i} late");
            let running = starts
                .iter()
                .filter(|&&s| s <= start && start < s + capacity.duration)
                .count();
            assert!(
                running <= capacity.slots,
                "{running} at once at refresh {i}"
            );
            if let Some(&next) = starts.get(i + 1) {
                assert!(next.duration_since(start).unwrap() >= capacity.spacing);
            }
        }
    }

    #[test]
    fn the_latest_starts_are_feasible_for_mixed_deadlines() {
        let mut x = 12345u64;
        for case in 0..200 {
            let mut deadlines: Vec<SystemTime> = (0..(case % 40) + 1)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    t(10_000 + (x >> 33) % 300)
                })
                .collect();
            deadlines.sort();
            let capacity = capacity(1 + case % 5, (case % 3) as u64, 1 + (case % 7) as u64);
            check_feasible(&deadlines, capacity);
        }
    }

    #[test]
    fn no_refresh_can_start_later_without_another_missing_its_deadline() {
        // 7 refreshes, 2 slots, 10 s each, all due at 100: the first must start by 60.
        let starts = latest_starts([t(100); 7].map(nanos).into_iter(), capacity(2, 0, 10));
        assert_eq!(secs(&starts)[0], 60);
        // Starting the first at 61 leaves 3 more rounds of 10 s for 6 refreshes on 2 slots
        // after it: the last ones would end at 101.
    }

    #[test]
    fn the_due_refreshes_read_from_the_first_tickets_are_those_of_the_whole_plan() {
        let mut x = 987_654_321u64;
        let mut draw = |below: u64| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) % below
        };
        for case in 0..300 {
            let n = 1 + draw(400) as usize;
            let spread = 1 + draw(5_000);
            let mut deadlines: Vec<u64> = (0..n).map(|_| nanos(t(10_000 + draw(spread)))).collect();
            deadlines.sort_unstable();
            let capacity = capacity(1 + draw(8) as usize, draw(3), 1 + draw(6));
            let now = nanos(t(9_000 + draw(spread + 2_000)));
            let starts = latest_starts(deadlines.iter().copied(), capacity);
            let whole = starts.partition_point(|&start| start <= now);
            assert_eq!(
                due(deadlines.iter().copied(), capacity, now),
                (whole, starts.get(whole).copied()),
                "case {case}: {capacity:?}"
            );
        }
    }
}
