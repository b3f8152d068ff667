// Mentions: `@handle`, `@<assistant name>` and `@<person>`, matched as the server matches the
// assistant's (case-insensitive, a whole word: `@aiden` is not `@ai`, `mail@ai` is no mention).
// Highlighting only splits text nodes of the already-sanitised DOM and adds <span>s whose text
// is set with textContent: no untrusted text ever goes through innerHTML here.

const WORD = '[\\p{L}\\p{N}_]';
const SKIP = new Set(['CODE', 'PRE', 'A', 'SCRIPT', 'STYLE']);

function escapeRegExp(text) {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** A global regex for `@name` of any of `names` (longest first), or null when there are none. */
export function mentionPattern(names) {
  const unique = [...new Set(names.filter(Boolean))].sort((a, b) => b.length - a.length);
  if (!unique.length) return null;
  const alternatives = unique.map(escapeRegExp).join('|');
  return new RegExp(`(?<!${WORD}|@)@(?:${alternatives})(?!${WORD})`, 'giu');
}

/** Whether `text` mentions `name` (`@Alice`, any case, whole word). */
export function mentions(text, name) {
  const pattern = mentionPattern([name]);
  return pattern !== null && pattern.test(String(text ?? ''));
}

function textNodes(root) {
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT, {
    acceptNode(node) {
      for (let el = node.parentElement; el && el !== root; el = el.parentElement) {
        if (SKIP.has(el.tagName) || el.classList.contains('mention')) return NodeFilter.FILTER_REJECT;
      }
      return NodeFilter.FILTER_ACCEPT;
    },
  });
  const found = [];
  while (walker.nextNode()) found.push(walker.currentNode);
  return found;
}

/**
 * Wrap every mention of `names` in `root`'s text in <span class="mention">, adding `mention-me`
 * to mentions of `me`. Returns true when `me` is mentioned.
 */
export function highlightMentions(root, names, me) {
  const pattern = mentionPattern([...names, me]);
  if (!pattern) return false;
  const mine = me ? me.toLowerCase() : null;
  let mentionsMe = false;
  for (const node of textNodes(root)) {
    const text = node.nodeValue;
    pattern.lastIndex = 0;
    if (!pattern.test(text)) continue;
    pattern.lastIndex = 0;
    const parts = [];
    let last = 0;
    for (const match of text.matchAll(pattern)) {
      if (match.index > last) parts.push(document.createTextNode(text.slice(last, match.index)));
      const span = document.createElement('span');
      span.className = 'mention';
      span.dataset.testid = 'mention';
      span.textContent = match[0];
      if (mine !== null && match[0].slice(1).toLowerCase() === mine) {
        span.classList.add('mention-me');
        mentionsMe = true;
      }
      parts.push(span);
      last = match.index + match[0].length;
    }
    if (last < text.length) parts.push(document.createTextNode(text.slice(last)));
    node.replaceWith(...parts);
  }
  return mentionsMe;
}

/** "(2) design · Roundtable" while mentions of you arrive in a hidden tab; cleared on return. */
export class MentionCounter {
  constructor() {
    this.base = document.title;
    this.count = 0;
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'visible') this.clear();
    });
  }

  setBase(title) {
    this.base = title;
    this.render();
  }

  /** A message mentioning you arrived: counted only while the tab is hidden. */
  bump() {
    if (document.visibilityState === 'visible') return;
    this.count += 1;
    this.render();
  }

  clear() {
    this.count = 0;
    this.render();
  }

  render() {
    document.title = this.count ? `(${this.count}) ${this.base}` : this.base;
  }
}
