// How times, durations and counts read on the page.

// "12:03:04" (local time) from an RFC 3339 timestamp; the text itself when it is not one.
export function clockTime(rfc3339) {
  const date = new Date(rfc3339);
  if (!rfc3339 || Number.isNaN(date.getTime())) return rfc3339 || '';
  return date.toLocaleTimeString([], {hour12: false});
}

// "850 µs", "12.3 ms", "4.50 s".
export function duration(us) {
  if (typeof us !== 'number' || !Number.isFinite(us)) return '';
  if (us < 1000) return `${Math.round(us)} µs`;
  if (us < 1_000_000) return `${(us / 1000).toFixed(1)} ms`;
  return `${(us / 1_000_000).toFixed(2)} s`;
}

// "1.2 KiB", "3.4 MiB".
export function bytes(n) {
  if (typeof n !== 'number' || !Number.isFinite(n)) return '';
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / (1024 * 1024)).toFixed(1)} MiB`;
}
