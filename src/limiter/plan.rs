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

/// The latest starts of refreshes whose deadlines are `deadlines`, sorted ascending; the result is
/// in the same order and ascending too, so the refreshes due at any instant are a prefix.
///
/// Scheduling backwards in deadline order: refresh `i` (of `n`) must finish by its deadline, the
/// refresh `slots` places after it in deadline order must be able to start once it finished (they
/// cannot all run at once), and the next one must start at least `spacing` after it:
/// `L[i] = min(D[i] - d, L[i + slots] - d, L[i + 1] - spacing)`. For fetches of one duration this
/// is the latest feasible schedule: starting each refresh at `L[i]` never runs more than `slots`
/// at once and finishes each by its deadline, and no refresh can start later without another
/// missing its deadline.
pub(super) fn latest_starts(deadlines: &[SystemTime], capacity: Capacity) -> Vec<SystemTime> {
    let n = deadlines.len();
    let slots = capacity.slots.max(1);
    let mut starts = vec![UNIX_EPOCH; n];
    for i in (0..n).rev() {
        let mut latest = before(deadlines[i], capacity.duration);
        if let Some(&later) = starts.get(i + slots) {
            latest = latest.min(before(later, capacity.duration));
        }
        if let Some(&next) = starts.get(i + 1) {
            latest = latest.min(before(next, capacity.spacing));
        }
        starts[i] = latest;
    }
    starts
}

/// `t - d`, or the epoch when that would precede it.
fn before(t: SystemTime, d: Duration) -> SystemTime {
    t.checked_sub(d).unwrap_or(UNIX_EPOCH).max(UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    fn secs(starts: &[SystemTime]) -> Vec<u64> {
        starts
            .iter()
            .map(|s| s.duration_since(UNIX_EPOCH).unwrap().as_secs())
            .collect()
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
        let starts = latest_starts(&[t(100), t(200), t(300)], capacity(4, 0, 2));
        assert_eq!(secs(&starts), [98, 198, 298]);
    }

    #[test]
    fn refreshes_sharing_a_deadline_are_stacked_back_by_slots() {
        let starts = latest_starts(&[t(1000); 5], capacity(2, 0, 10));
        // The last two finish at the deadline, the two before them 10 s earlier, the first 10 s
        // before those.
        assert_eq!(secs(&starts), [970, 980, 980, 990, 990]);
    }

    #[test]
    fn a_rate_spaces_the_starts_back_from_the_deadline() {
        let starts = latest_starts(&[t(1000); 4], capacity(10, 5, 1));
        assert_eq!(secs(&starts), [984, 989, 994, 999]);
    }

    #[test]
    fn an_infeasible_plan_starts_at_the_epoch_rather_than_overflowing() {
        let starts = latest_starts(&[t(5); 3], capacity(1, 0, 10));
        assert_eq!(secs(&starts), [0, 0, 0]);
    }

    /// Runs the plan forwards: each refresh starting at its latest start and taking `duration`.
    fn check_feasible(deadlines: &[SystemTime], capacity: Capacity) {
        let starts = latest_starts(deadlines, capacity);
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
        let starts = latest_starts(&[t(100); 7], capacity(2, 0, 10));
        assert_eq!(secs(&starts)[0], 60);
        // Starting the first at 61 leaves 3 more rounds of 10 s for 6 refreshes on 2 slots
        // after it: the last ones would end at 101.
    }
}
