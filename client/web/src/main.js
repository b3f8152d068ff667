// Roundtable web client: wires the Socket.IO connection (docs/protocol.md) to the page.

import { io } from 'socket.io-client';
import {
  newMessageId, rememberName, rememberPassword, storedName, storedPassword, storedUserId,
  rememberRoomPassword, storedRoomPassword,
} from './identity.js';
import { MentionCompleter } from './completion.js';
import { MentionCounter } from './mentions.js';
import { MessageList } from './messages.js';
import { Activity, OnlineList } from './room.js';
import { ROOM_RULE, RoomsPanel, roomFromPath, showRoomName } from './rooms.js';
import { REPLY_MODES, ReplyModeControl } from './reply.js';
import { fetchSession, showSignedIn } from './session.js';
import './style.css';

const NOTICE_MS = 6000;

const $ = (id) => document.getElementById(id);

const ui = {
  overlay: $('join-overlay'),
  joinForm: $('join-form'),
  nickname: $('nickname-input'),
  nicknameError: $('nickname-error'),
  passwordField: $('password-field'),
  password: $('password-input'),
  joinButton: $('join-button'),
  banner: $('reconnect-banner'),
  me: $('me'),
  assistantName: $('assistant-name'),
  composer: $('composer'),
  input: $('message-input'),
  send: $('send'),
  stop: $('stop'),
  notice: $('notice'),
  roomName: $('room-name'),
  joinRoom: $('join-room'),
  joinDefaultRoom: $('join-default-room'),
  roomPasswordField: $('room-password-field'),
  roomPassword: $('room-password-input'),
};

const mentionCounter = new MentionCounter();

const messages = new MessageList($('messages'), $('empty'), $('jump'));
const online = new OnlineList($('online-list'), $('online-count'), $('online-toggle'), $('online-panel'));
const activity = new Activity($('typing'), $('typing-text'), $('tools'));
const replyControl = new ReplyModeControl($('reply-mode-field'), $('reply-mode'), $('reply-mode-help'),
  (mode) => setReplyMode(mode));

const state = {
  wantJoin: false, // the person asked to join; re-register on every (re)connect
  name: '',
  userId: null, // what the server bound at the last welcome
  registered: false, // this connection is registered
  busy: false,
  assistant: 'Assistant',
  handle: 'ai', // the assistant's @handle
  reply: 'always', // the room's reply mode: only `always` locks input while the AI answers
  replyLocked: false, // the server's ROOMS_FILE fixes the mode
  streamingId: null,
  password: storedPassword(), // only for rooms with ROOM_PASSWORD
};
const address = roomFromPath(location.pathname);
state.room = address.room; // null: the server's default room
state.roomPassword = storedRoomPassword(state.room); // only for a room that has its own password
const rooms = new RoomsPanel({
  toggle: $('rooms-toggle'), panel: $('rooms-panel'), list: $('room-list'),
  status: $('rooms-status'), openForm: $('room-open-form'), openInput: $('room-open-input'),
  openError: $('room-open-error'), link: $('room-share-link'), copy: $('room-copy'),
}, () => (state.password ? { Authorization: `Bearer ${state.password}` } : {}));

// `auth` is a function so every (re)connection sends the password as it is now.
const socket = io({
  transports: ['websocket', 'polling'],
  autoConnect: address.invalid === null, // an address naming no valid room joins nothing
  auth: (send) => send(state.password ? { token: state.password } : {}),
});
window.__roundtable_socket = socket; // for the browser tests (and curious people)

// ----- joining -----
function register() {
  const payload = { user_id: state.userId ?? storedUserId(), name: state.name };
  if (state.room) payload.room = state.room;
  if (state.roomPassword) payload.password = state.roomPassword;
  socket.emit('register', payload);
}

function showRoom(name) {
  showRoomName(ui.roomName, name);
  mentionCounter.setBase(document.title);
  rooms.setCurrent(name);
  ui.joinRoom.textContent = name ? `Room: ${name}` : '';
  ui.joinRoom.hidden = !name;
}

function showJoinDialog(error, focus = ui.nickname) {
  ui.overlay.hidden = false;
  ui.banner.hidden = true;
  ui.joinButton.disabled = false;
  ui.joinButton.textContent = 'Join';
  ui.nicknameError.textContent = error ?? '';
  ui.nicknameError.hidden = !error;
  focus.focus();
  focus.select();
}

ui.joinForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const name = ui.nickname.value.trim();
  if (!name) {
    showJoinDialog('Please enter a nickname.');
    return;
  }
  state.name = name;
  state.wantJoin = true;
  if (!ui.passwordField.hidden) {
    state.password = ui.password.value;
    rememberPassword(state.password);
  }
  if (!ui.roomPasswordField.hidden) {
    state.roomPassword = ui.roomPassword.value;
    rememberRoomPassword(state.room, state.roomPassword);
  }
  ui.joinButton.disabled = true;
  ui.joinButton.textContent = 'Joining…';
  ui.nicknameError.hidden = true;
  if (socket.connected) register();
  else if (!socket.active) socket.connect();
});

// ----- connection -----
socket.on('connect', () => {
  if (state.wantJoin) register();
});

socket.on('disconnect', (reason) => {
  state.registered = false;
  if (state.userId !== null) ui.banner.hidden = false;
  updateComposer();
  // The server hung up on us (e.g. a restart): socket.io-client will not retry by itself.
  if (reason === 'io server disconnect') setTimeout(() => socket.connect(), 1000);
});

socket.on('connect_error', (err) => {
  if (String(err?.message).startsWith('unauthorized')) {
    // Refused by the room password: socket.io-client does not retry this by itself.
    state.wantJoin = false;
    ui.passwordField.hidden = false;
    const tried = Boolean(state.password);
    const focus = ui.nickname.value ? ui.password : ui.nickname;
    showJoinDialog(tried ? 'Wrong room password.' : 'This room needs a password.', focus);
    return;
  }
  if (state.userId !== null) ui.banner.hidden = false;
  if (state.wantJoin && !state.registered && state.userId === null) {
    ui.joinButton.textContent = 'Connecting…';
  }
});

socket.on('welcome', (welcome) => {
  state.registered = true;
  state.userId = welcome.user_id;
  state.name = welcome.name;
  state.assistant = welcome.assistant?.name || 'Assistant';
  state.handle = welcome.assistant?.handle || state.handle;
  state.reply = REPLY_MODES.includes(welcome.room?.reply) ? welcome.room.reply : 'always';
  state.replyLocked = Boolean(welcome.room?.reply_locked);
  rememberName(welcome.name);
  ui.overlay.hidden = true;
  ui.banner.hidden = true;
  ui.me.hidden = false;
  ui.me.textContent = welcome.name;
  ui.me.dataset.userId = welcome.user_id;
  ui.assistantName.textContent = `with ${state.assistant}`;
  if (welcome.room?.name) showRoom(welcome.room.name);
  ui.assistantName.title = welcome.assistant?.model || '';
  document.getElementById('demo-note').hidden = !welcome.assistant?.demo;
  messages.setMe(welcome.user_id);
  messages.setMentions(mentionNames, welcome.name);
  online.reset(welcome.users, welcome.user_id);
  setBusy(Boolean(welcome.busy));
  showReplyMode();
  ui.input.focus();
});

socket.on('error', (error) => {
  const code = error?.code;
  const text = error?.message || 'The server refused that request.';
  if (!state.registered) {
    // Only `register` is sent before a welcome: name_taken, invalid_name, room_full, ...
    state.wantJoin = false; // don't retry a refused name on every reconnect
    if (code === 'wrong_password') {
      askRoomPassword(text);
      return;
    }
    showJoinDialog(text);
  } else if (code !== 'already_registered') {
    showNotice(text);
  }
});

function askRoomPassword(text) {
  rememberRoomPassword(state.room, ''); // a remembered password that stopped working
  ui.roomPasswordField.hidden = false;
  showJoinDialog(text, ui.nickname.value ? ui.roomPassword : ui.nickname);
}

// ----- room traffic -----
socket.on('message-list', (list) => {
  if (!Array.isArray(list)) return;
  const finished = list.length === 1 && list[0]?.id === state.streamingId ? list[0].id : null;
  messages.mergeHistory(list); // the history after welcome, or a finished answer: upsert by id
  if (finished) noticeMention(finished); // history is not news: only a finished answer counts
});

socket.on('message', (msg) => {
  if (!msg || typeof msg.id !== 'string') return;
  messages.upsert(msg);
  noticeMention(msg.id);
});

socket.on('room-settings', (settings) => {
  if (!REPLY_MODES.includes(settings?.reply)) return;
  state.reply = settings.reply;
  showReplyMode();
});

/** Count a new message that mentions you in the tab title while the tab is hidden. */
function noticeMention(id) {
  if (messages.mentionsMe(id)) mentionCounter.bump();
}

/** Who can be @mentioned: the assistant (handle and name) and the people online. */
function mentionNames() {
  return [state.handle, state.assistant, ...online.names()];
}

function mentionCandidates() {
  const people = online.names().filter((name) => name !== state.name);
  people.sort((a, b) => a.localeCompare(b));
  return [
    { insert: state.handle, label: state.assistant, hint: state.assistant },
    ...people.map((name) => ({ insert: name, label: name, hint: '' })),
  ];
}

socket.on('join', (user) => {
  online.add(user);
  messages.addEvent(`${user.name} joined`, 'join');
});

socket.on('leave', (user) => {
  online.remove(user);
  messages.addEvent(`${user.name} left`, 'leave');
});

socket.on('ai-start', () => setBusy(true));

socket.on('message-start', (msg) => {
  if (!msg || typeof msg.id !== 'string') return;
  messages.upsert({ ...msg, content: msg.content ?? '' });
  messages.setStreaming(msg.id, true);
  state.streamingId = msg.id;
});

socket.on('message-delta', ({ id, delta } = {}) => {
  if (typeof id !== 'string' || typeof delta !== 'string') return;
  if (messages.appendDelta(id, delta)) return;
  // We missed the message-start (should not happen): start the bubble from this delta.
  messages.upsert({
    id, user_id: null, name: state.assistant, role: 'assistant', content: delta,
    created_at: Date.now(),
  });
  messages.setStreaming(id, true);
  state.streamingId = id;
});

socket.on('tool-call', (call) => {
  if (call && typeof call === 'object') activity.tool(call);
});

socket.on('ai-end', () => setBusy(false));

function setBusy(busy) {
  const wasFocused = document.activeElement === ui.input || document.activeElement === ui.stop;
  state.busy = busy;
  ui.stop.disabled = false;
  if (busy) {
    activity.start(state.assistant, holdsInput());
  } else {
    activity.end();
    messages.flush();
    if (state.streamingId) messages.setStreaming(state.streamingId, false);
    state.streamingId = null;
  }
  updateComposer();
  if (!busy && (wasFocused || document.activeElement === document.body)) ui.input.focus();
}

/** Only `always` rooms lock input while the AI answers; in the others people keep talking. */
function holdsInput() {
  return state.reply === 'always';
}

function inputLocked() {
  return state.busy && holdsInput();
}

function updateComposer() {
  const canSend = state.registered && !inputLocked();
  ui.input.disabled = !canSend;
  ui.send.disabled = !canSend;
  ui.stop.hidden = !(state.registered && state.busy);
  ui.composer.classList.toggle('locked', inputLocked());
  replyControl.setEnabled(state.registered);
}

function showReplyMode() {
  replyControl.show(state.reply, state.replyLocked);
  if (state.busy) activity.start(state.assistant, holdsInput());
  updateComposer();
}

/** Ask the server to switch the room's reply mode; everyone hears back through `room-settings`. */
function setReplyMode(mode) {
  socket.emit('room-settings', { reply: mode }, (ack) => {
    if (ack?.ok && REPLY_MODES.includes(ack.reply)) {
      state.reply = ack.reply;
    } else if (ack?.code === 'settings_locked') {
      state.replyLocked = true;
    }
    showReplyMode(); // a refusal puts the control back (its reason arrives as an `error`)
  });
}

// ----- sending -----
function send() {
  const content = ui.input.value;
  if (!content.trim() || !state.registered || inputLocked()) return;
  completer.close();
  const id = newMessageId();
  messages.upsert({
    id, user_id: state.userId, name: state.name, role: 'user', content, created_at: Date.now(),
  });
  messages.scrollToBottom();
  ui.input.value = '';
  autosize();
  socket.emit('message', { content, id }, (ack) => {
    if (ack?.ok) {
      if (ack.id && ack.id !== id) messages.rename(id, ack.id);
      return;
    }
    // Refused (the reason arrives as an `error` notice): take it back and restore the draft.
    messages.remove(id);
    if (!ui.input.value) {
      ui.input.value = content;
      autosize();
    }
  });
}

ui.composer.addEventListener('submit', (event) => {
  event.preventDefault();
  send();
});

// Created before the Enter handler below, so choosing a name with Enter does not send.
const completer = new MentionCompleter(ui.input, $('mention-list'), mentionCandidates);

ui.input.addEventListener('keydown', (event) => {
  if (event.defaultPrevented) return;
  if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    send();
  }
});

function autosize() {
  if (!ui.input.value) {
    ui.input.style.height = ''; // the CSS height; an empty box must not size to its placeholder
    return;
  }
  ui.input.style.height = 'auto';
  ui.input.style.height = `${Math.min(ui.input.scrollHeight + 2, 160)}px`; // + borders
}
ui.input.addEventListener('input', autosize);

ui.stop.addEventListener('click', () => {
  ui.stop.disabled = true; // once per answer; `ai-end` (or the next `ai-start`) re-enables it
  socket.emit('stop');
});

// ----- notices -----
let noticeTimer = 0;
function showNotice(text) {
  ui.notice.textContent = text;
  ui.notice.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => (ui.notice.hidden = true), NOTICE_MS);
}

// ----- start -----
ui.nickname.value = storedName();
ui.password.value = state.password;
ui.roomPassword.value = state.roomPassword;
showRoom(state.room);
if (address.invalid !== null) {
  // Never join some other room than the address names: say what is wrong instead.
  showJoinDialog(`“${address.invalid}” is not a room name. Room names are ${ROOM_RULE}.`);
  ui.joinButton.disabled = true;
  ui.nickname.disabled = true;
  ui.joinDefaultRoom.hidden = false;
} else {
  showJoinDialog();
  fetchSession().then(({ user, error }) => {
    if (user) joinAs(user);
    else if (error && !state.wantJoin && !state.registered) showJoinDialog(error);
  });
}
updateComposer();

// Signed in by a proxy: no nickname to pick; the server binds the name at connect.
function joinAs(user) {
  showSignedIn($('signed-in'), user);
  if (state.registered) return;
  state.name = user;
  state.wantJoin = true;
  ui.overlay.hidden = true;
  if (socket.connected) register();
}
