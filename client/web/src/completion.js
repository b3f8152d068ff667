// `@` completion in the composer: typing `@` (and perhaps a few letters) opens a list of the
// assistant's handle and the people in the room; arrows move, Enter or Tab choose, a click
// chooses, Escape closes. The textarea (a textbox with aria-autocomplete="list") controls the
// listbox, and the active option is announced through aria-activedescendant. Names reach the
// list through textContent only.

const MAX_SHOWN = 8;
// `@` at the start or after a space/punctuation, then what has been typed of the name so far.
const TOKEN = /(?:^|[^\p{L}\p{N}_@])@([^\s@]{0,40})$/u;

export class MentionCompleter {
  /** `candidates()` returns [{label, insert, hint}] (the handle first, then people). */
  constructor(input, list, candidates) {
    this.input = input;
    this.list = list;
    this.candidates = candidates;
    this.options = [];
    this.active = -1;
    this.start = -1; // where the `@` is in the input
    input.setAttribute('aria-autocomplete', 'list');
    input.setAttribute('aria-controls', list.id);
    input.addEventListener('input', () => this.update());
    input.addEventListener('click', () => this.update());
    input.addEventListener('blur', () => setTimeout(() => this.close(), 150));
    // Registered before the composer's own Enter handler, so a chosen name is not also sent.
    input.addEventListener('keydown', (event) => this.onKey(event));
    list.addEventListener('mousedown', (event) => event.preventDefault()); // keep the focus
    list.addEventListener('click', (event) => {
      const option = event.target.closest('[role=option]');
      if (option) this.choose(Number(option.dataset.index));
    });
  }

  get isOpen() {
    return !this.list.hidden;
  }

  /** Re-read the text before the caret: open, filter or close the list. */
  update() {
    const caret = this.input.selectionStart;
    if (caret !== this.input.selectionEnd) return this.close();
    const match = TOKEN.exec(this.input.value.slice(0, caret));
    if (!match) return this.close();
    const typed = match[1].toLowerCase();
    this.start = caret - match[1].length - 1;
    this.options = this.candidates()
      .filter((c) => c.insert.toLowerCase().startsWith(typed) || c.label.toLowerCase().startsWith(typed))
      .slice(0, MAX_SHOWN);
    if (!this.options.length) return this.close();
    this.active = 0;
    this.render();
  }

  render() {
    const items = this.options.map((option, index) => {
      const li = document.createElement('li');
      li.id = `${this.list.id}-${index}`;
      li.setAttribute('role', 'option');
      li.dataset.index = String(index);
      li.dataset.testid = 'mention-option';
      li.className = 'mention-option';
      const label = document.createElement('span');
      label.className = 'mention-label';
      label.textContent = `@${option.insert}`;
      li.append(label);
      if (option.hint) {
        const hint = document.createElement('span');
        hint.className = 'mention-hint';
        hint.textContent = option.hint;
        li.append(hint);
      }
      return li;
    });
    this.list.replaceChildren(...items);
    this.list.hidden = false;
    this.highlight();
  }

  highlight() {
    [...this.list.children].forEach((li, index) => {
      const on = index === this.active;
      li.setAttribute('aria-selected', String(on));
      li.classList.toggle('active', on);
      if (on) li.scrollIntoView({ block: 'nearest' });
    });
    this.input.setAttribute('aria-activedescendant', `${this.list.id}-${this.active}`);
  }

  close() {
    if (!this.isOpen) return;
    this.list.hidden = true;
    this.list.replaceChildren();
    this.options = [];
    this.active = -1;
    this.input.removeAttribute('aria-activedescendant');
  }

  onKey(event) {
    if (!this.isOpen || event.isComposing) return;
    const count = this.options.length;
    if (event.key === 'ArrowDown' || event.key === 'ArrowUp') {
      this.active = (this.active + (event.key === 'ArrowDown' ? 1 : count - 1)) % count;
      this.highlight();
    } else if ((event.key === 'Enter' && !event.shiftKey) || event.key === 'Tab') {
      this.choose(this.active);
    } else if (event.key === 'Escape') {
      this.close();
    } else {
      return;
    }
    event.preventDefault();
    event.stopImmediatePropagation();
  }

  /** Replace the `@typed` before the caret with `@<choice> `. */
  choose(index) {
    const option = this.options[index];
    if (!option) return;
    const value = this.input.value;
    const caret = this.input.selectionStart;
    const inserted = `@${option.insert} `;
    this.input.value = value.slice(0, this.start) + inserted + value.slice(caret);
    const at = this.start + inserted.length;
    this.input.setSelectionRange(at, at);
    this.close();
    this.input.focus();
    this.input.dispatchEvent(new Event('input', { bubbles: true })); // autosize; stays closed
  }
}
