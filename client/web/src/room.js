// The room's state as the server tells it: who is online, whether the AI is answering, and
// which tools it is using. Pure DOM updates; the socket wiring lives in main.js.

const TOOL_LABELS = {
  current_time: 'Looking up the time…',
  who_is_here: 'Checking who is here…',
  roll_dice: 'Rolling the dice…',
  pick_participant: 'Picking someone…',
};

export function toolLabel(name) {
  return TOOL_LABELS[name] ?? `Using ${name}…`;
}

export class OnlineList {
  constructor(list, count, toggle, panel) {
    this.list = list;
    this.count = count;
    this.toggle = toggle;
    this.panel = panel;
    this.people = new Map(); // user_id -> {user_id, name}
    this.me = null;
    toggle.addEventListener('click', () => this.setOpen(!panel.classList.contains('open')));
  }

  setOpen(open) {
    this.panel.classList.toggle('open', open);
    this.toggle.setAttribute('aria-expanded', String(open));
  }

  reset(users, me) {
    this.me = me;
    this.people.clear();
    for (const u of users ?? []) this.people.set(u.user_id, u);
    this.render();
  }

  add(user) {
    this.people.set(user.user_id, user);
    this.render();
  }

  remove(user) {
    this.people.delete(user.user_id);
    this.render();
  }

  /** The nicknames online now, oldest first. */
  names() {
    return [...this.people.values()].map((u) => String(u.name ?? ''));
  }

  render() {
    const items = [...this.people.values()].map((u) => {
      const li = document.createElement('li');
      li.dataset.testid = 'online-user';
      li.dataset.userId = u.user_id;
      const name = document.createElement('span');
      name.className = 'who';
      name.textContent = u.name;
      li.append(name);
      if (u.user_id === this.me) {
        li.classList.add('self');
        const you = document.createElement('span');
        you.className = 'you';
        you.textContent = '(you)';
        li.append(you);
      }
      return li;
    });
    this.list.replaceChildren(...items);
    this.count.textContent = String(this.people.size);
  }
}

export class Activity {
  /** The typing indicator and tool status lines shown while the AI answers. */
  constructor(typing, typingText, tools) {
    this.typing = typing;
    this.typingText = typingText;
    this.tools = tools;
    this.calls = new Map(); // call_id -> element
  }

  /** `holdsInput`: the room locks input while it answers ("typing…"), else "answering…". */
  start(assistantName, holdsInput = true) {
    this.typingText.textContent = `${assistantName} is ${holdsInput ? 'typing' : 'answering'}…`;
    this.typing.hidden = false;
  }

  end() {
    this.typing.hidden = true;
    this.clearTools();
  }

  tool({ call_id: callId, name, status }) {
    const key = String(callId ?? name);
    if (status === 'started') {
      let line = this.calls.get(key);
      if (!line) {
        line = document.createElement('div');
        line.className = 'tool';
        line.dataset.testid = 'tool-status';
        this.tools.append(line);
        this.calls.set(key, line);
      }
      line.dataset.tool = String(name ?? '');
      line.textContent = toolLabel(String(name ?? 'a tool'));
    } else if (status === 'finished' || status === 'failed') {
      this.calls.get(key)?.remove();
      this.calls.delete(key);
    }
  }

  clearTools() {
    for (const line of this.calls.values()) line.remove();
    this.calls.clear();
  }
}
