// The key this page was opened with (/?key=KEY), sent with every read of the cluster:
// as `?key=` on the event stream (EventSource cannot set headers), as a Bearer header
// elsewhere. Kept for this tab only (sessionStorage) and taken out of the address bar,
// so it is neither bookmarked nor shared with a copied link.
const STORE = "parallax.dashboardKey";

function pageKey() {
  const url = new URL(window.location.href);
  const given = url.searchParams.get("key");
  if (given !== null) {
    sessionStorage.setItem(STORE, given);
    url.searchParams.delete("key");
    history.replaceState(null, "", url.pathname + url.search + url.hash);
  }
  return sessionStorage.getItem(STORE) || "";
}

export const KEY = pageKey();

export function withKey(path) {
  return KEY ? `${path}?key=${encodeURIComponent(KEY)}` : path;
}

export function keyHeaders() {
  return KEY ? { Authorization: `Bearer ${KEY}` } : {};
}
