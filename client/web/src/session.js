// Sign-in by a proxy (TRUSTED_USER_HEADER, docs/protocol.md): who the server says this page is.

/**
 * GET /api/session: `{ user: "alice" }` when a sign-in proxy names this person, `{ user: null }`
 * when people pick their own nickname, plus `error` (the server's reason) when the server needs
 * a sign-in this request did not carry.
 */
export async function fetchSession() {
  try {
    const res = await fetch('/api/session', { headers: { Accept: 'application/json' } });
    const body = await res.json().catch(() => ({}));
    if (res.ok) return { user: typeof body?.user === 'string' ? body.user : null };
    return { user: null, error: body?.message || 'Sign-in required.' };
  } catch {
    return { user: null }; // offline, or a server without the route: the nickname dialog
  }
}

/** Mark the page as signed in: "signed in as" before the name the welcome shows. */
export function showSignedIn(label, user) {
  label.textContent = 'signed in as';
  label.title = `Signed in as ${user} (by the server's sign-in)`;
  label.hidden = false;
}
