// The room's reply mode (docs/protocol.md): when the assistant answers. The header's control
// shows it, switches it (any participant may), and is disabled when the server fixes it.

export const REPLY_MODES = ['always', 'mention', 'auto'];

const LOCKED_HELP = 'The server fixes how the assistant answers in this room.';
const OPEN_HELP = 'How the assistant answers in this room; anyone here may change it.';

export class ReplyModeControl {
  /** `field` wraps the label and `select`; `help` describes it; `onChoose(mode)` asks to switch. */
  constructor(field, select, help, onChoose) {
    this.field = field;
    this.select = select;
    this.help = help;
    this.locked = false;
    select.addEventListener('change', () => onChoose(select.value));
  }

  show(mode, locked) {
    this.field.hidden = false;
    this.select.value = mode;
    this.locked = locked;
    this.help.textContent = locked ? LOCKED_HELP : OPEN_HELP;
    this.field.title = this.help.textContent;
    this.select.disabled = locked;
  }

  setEnabled(registered) {
    this.select.disabled = this.locked || !registered;
  }
}
