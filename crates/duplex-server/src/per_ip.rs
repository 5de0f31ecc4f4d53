//! Per-address limits: how many connections one source address may hold,
//! and how fast it may open them, so that one host cannot take the whole
//! connection limit. IPv4 addresses count one by one; IPv6 addresses by
//! their /64 (one host or one customer's network, as ISPs assign them).
//!
//! Connections from loopback are exempt by default: behind a local reverse
//! proxy every client arrives from 127.0.0.1, and the proxy is where their
//! own addresses are known.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The limits.
#[derive(Debug, Clone, PartialEq)]
pub struct PerIpLimits {
    /// Most connections one address (IPv6: one /64) may hold at once; 0
    /// for no limit. Default 1000.
    pub max_connections: usize,
    /// Connections one address may open per second, on average; 0 for no
    /// limit. Default 50.
    pub connections_per_second: u32,
    /// Connections one address may open at once before the rate applies.
    /// Default 100.
    pub connection_burst: u32,
    /// Loopback peers are not limited. Default true.
    pub exempt_loopback: bool,
}

impl Default for PerIpLimits {
    fn default() -> Self {
        PerIpLimits {
            max_connections: 1000,
            connections_per_second: 50,
            connection_burst: 100,
            exempt_loopback: true,
        }
    }
}

/// Why an address was refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// It holds `max_connections` already.
    TooManyConnections,
    /// It opens connections faster than allowed.
    TooFast,
}

/// An address as the limits count it: IPv4 itself, IPv6 its /64 (IPv4
/// mapped into IPv6 counts as IPv4).
pub fn key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u128::from(u32::from(v4)),
            None => (u128::from(v6) >> 64) << 64 | 1 << 32,
        },
    }
}

#[derive(Debug)]
struct Entry {
    connections: u32,
    tokens: f64,
    refilled: Instant,
}

/// The counts of every address with connections or a recent burst.
#[derive(Debug)]
pub struct PerIp {
    limits: PerIpLimits,
    map: Mutex<HashMap<u128, Entry>>,
    /// Entries beyond which idle ones are swept out.
    sweep_at: Mutex<usize>,
}

impl PerIp {
    /// Counts under `limits`.
    pub fn new(limits: PerIpLimits) -> Self {
        PerIp {
            limits,
            map: Mutex::default(),
            sweep_at: Mutex::new(1024),
        }
    }

    /// Whether connections from `ip` are counted at all.
    pub fn applies(&self, ip: IpAddr) -> bool {
        let l = &self.limits;
        (l.max_connections > 0 || l.connections_per_second > 0)
            && !(l.exempt_loopback && ip.is_loopback())
    }

    /// A new connection from `ip` at `now`: `Ok(key)` counts it (give the
    /// key back to [`release`](Self::release) when it ends), or why not.
    pub fn admit(&self, ip: IpAddr, now: Instant) -> Result<u128, Refusal> {
        let l = &self.limits;
        let k = key(ip);
        let burst = f64::from(l.connection_burst.max(1));
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let e = map.entry(k).or_insert(Entry {
            connections: 0,
            tokens: burst,
            refilled: now,
        });
        if l.max_connections > 0 && e.connections as usize >= l.max_connections {
            return Err(Refusal::TooManyConnections);
        }
        if l.connections_per_second > 0 {
            let rate = f64::from(l.connections_per_second);
            let dt = now.saturating_duration_since(e.refilled).as_secs_f64();
            e.tokens = (e.tokens + dt * rate).min(burst);
            e.refilled = now;
            if e.tokens < 1.0 {
                return Err(Refusal::TooFast);
            }
            e.tokens -= 1.0;
        }
        e.connections += 1;
        let len = map.len();
        drop(map);
        self.maybe_sweep(len, now);
        Ok(k)
    }

    /// A connection counted by [`admit`](Self::admit) ended.
    pub fn release(&self, k: u128) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = map.get_mut(&k) {
            e.connections = e.connections.saturating_sub(1);
        }
    }

    /// Addresses counted now.
    pub fn tracked(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Drops entries with no connection whose bucket has refilled (they
    /// hold nothing the next connection would not start with), once the
    /// map has doubled since the last sweep: the map stays proportional to
    /// the addresses that are connected or were busy lately.
    fn maybe_sweep(&self, len: usize, now: Instant) {
        let mut at = self.sweep_at.lock().unwrap_or_else(|e| e.into_inner());
        if len < *at {
            return;
        }
        let l = &self.limits;
        let refill = match l.connections_per_second {
            0 => Duration::ZERO,
            r => Duration::from_secs_f64(f64::from(l.connection_burst.max(1)) / f64::from(r)),
        };
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, e| e.connections > 0 || now.saturating_duration_since(e.refilled) < refill);
        *at = (map.len() * 2).max(1024);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize, rate: u32, burst: u32) -> PerIpLimits {
        PerIpLimits {
            max_connections: max,
            connections_per_second: rate,
            connection_burst: burst,
            exempt_loopback: false,
        }
    }

    #[test]
    fn ipv6_counts_by_64_and_ipv4_by_address() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(key(a), key(b));
        assert_ne!(key(a), key(c));
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(key(v4), key(mapped));
        assert_ne!(key(v4), key("192.0.2.8".parse().unwrap()));
        // No IPv4 address shares a key with an IPv6 /64.
        assert_ne!(key("::".parse().unwrap()), key("0.0.0.0".parse().unwrap()));
    }

    #[test]
    fn connections_are_capped_and_released() {
        let p = PerIp::new(limits(2, 0, 1));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let now = Instant::now();
        let k1 = p.admit(ip, now).unwrap();
        let _k2 = p.admit(ip, now).unwrap();
        assert_eq!(p.admit(ip, now), Err(Refusal::TooManyConnections));
        // Another address is not affected.
        assert!(p.admit("192.0.2.2".parse().unwrap(), now).is_ok());
        p.release(k1);
        assert!(p.admit(ip, now).is_ok());
    }

    #[test]
    fn the_rate_allows_a_burst_then_refills() {
        let p = PerIp::new(limits(0, 10, 3));
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            p.admit(ip, t0).unwrap();
        }
        assert_eq!(p.admit(ip, t0), Err(Refusal::TooFast));
        // 10 per second: one more after 100 ms, not before.
        assert_eq!(
            p.admit(ip, t0 + Duration::from_millis(50)),
            Err(Refusal::TooFast)
        );
        assert!(p.admit(ip, t0 + Duration::from_millis(150)).is_ok());
    }

    #[test]
    fn loopback_is_exempt_by_default_and_idle_entries_are_swept() {
        let p = PerIp::new(PerIpLimits::default());
        assert!(!p.applies("127.0.0.1".parse().unwrap()));
        assert!(!p.applies("::1".parse().unwrap()));
        assert!(p.applies("192.0.2.1".parse().unwrap()));
        let p = PerIp::new(limits(0, 1000, 1));
        let t0 = Instant::now();
        // Sweeps run when the map has doubled since the last (1024, 2048,
        // 4096, 8192 entries); entries refill in 1 ms, so the one at 8192,
        // a second later, drops every idle entry.
        for i in 0..8191u32 {
            let k = p.admit(IpAddr::from(i.to_be_bytes()), t0).unwrap();
            p.release(k);
        }
        assert_eq!(p.tracked(), 8191);
        let _ = p.admit("198.51.100.1".parse().unwrap(), t0 + Duration::from_secs(1));
        assert_eq!(p.tracked(), 1);
    }
}
