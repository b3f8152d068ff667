// Markdown to safe HTML: marked renders, DOMPurify sanitises, then we only add DOM nodes.
// Raw HTML in a message is shown as text (people typing `<b>` see `<b>`), and DOMPurify still
// sanitises everything marked produced, so nothing executable reaches innerHTML.

import DOMPurify from 'dompurify';
import { Marked } from 'marked';

const escapeHtml = (s) =>
  s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);

const marked = new Marked({
  gfm: true,
  breaks: true,
  renderer: {
    // Raw HTML from a person or the model is text, never markup.
    html({ text, block }) {
      if (!block) return escapeHtml(text);
      return `<p>${escapeHtml(text.trimEnd()).replace(/\n/g, '<br>')}</p>\n`;
    },
  },
});

DOMPurify.addHook('afterSanitizeAttributes', (node) => {
  if (node.tagName === 'A' && node.hasAttribute('href')) {
    node.setAttribute('target', '_blank');
    node.setAttribute('rel', 'noopener noreferrer');
  }
});

const PURIFY = {
  USE_PROFILES: { html: true },
  FORBID_TAGS: ['style', 'form', 'input', 'button', 'textarea', 'select'],
  FORBID_ATTR: ['style'],
};

/** Safe HTML for a markdown string. */
export function renderMarkdown(text) {
  const html = marked.parse(text ?? '', { async: false });
  return DOMPurify.sanitize(html, PURIFY);
}

async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  // Plain-http fallback (e.g. the server opened on a LAN address).
  const area = document.createElement('textarea');
  area.value = text;
  area.setAttribute('readonly', '');
  area.style.position = 'fixed';
  area.style.opacity = '0';
  document.body.append(area);
  area.select();
  try {
    document.execCommand('copy');
  } finally {
    area.remove();
  }
}

function addCopyButton(pre) {
  const button = document.createElement('button');
  button.type = 'button';
  button.className = 'copy';
  button.dataset.testid = 'copy-button';
  button.textContent = 'Copy';
  button.addEventListener('click', async () => {
    const code = pre.querySelector('code') ?? pre;
    try {
      await copyText(code.textContent);
      button.textContent = 'Copied';
    } catch {
      button.textContent = 'Copy failed';
    }
    setTimeout(() => (button.textContent = 'Copy'), 1500);
  });
  const wrap = document.createElement('div');
  wrap.className = 'codeblock';
  pre.replaceWith(wrap);
  wrap.append(pre, button);
}

/** Render `text` into `el` as sanitised markdown, with a Copy button on each code block. */
export function renderInto(el, text) {
  el.innerHTML = renderMarkdown(text);
  el.querySelectorAll('pre').forEach(addCopyButton);
}
