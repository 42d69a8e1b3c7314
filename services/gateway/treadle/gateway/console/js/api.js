// Talking to the gateway: queries and mutations over HTTP POST /graphql,
// subscriptions over one graphql-transport-ws WebSocket (graphql-ws, vendored),
// and the API key when the gateway asks for one.

const ENDPOINT = "/graphql";
const KEY = "treadle.apiKey";

/** A GraphQL error answer; `code` is its extensions.code (UNAUTHENTICATED, NOT_FOUND, ...). */
export class ApiError extends Error {
  constructor(errors) {
    super(errors.map((e) => e.message).join("; "));
    this.errors = errors;
    this.code = errors[0]?.extensions?.code ?? null;
  }
}

function apiKey() {
  return window.sessionStorage.getItem(KEY);
}

function authHeader() {
  const key = apiKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

let asking = null;

/** Ask for a key in the key dialog (once, however many requests wait for it). */
function askKey(refused) {
  if (asking) return asking;
  const dialog = document.getElementById("key-dialog");
  const input = document.getElementById("key-input");
  document.getElementById("key-why").textContent = refused
    ? "The gateway refused the key: enter another."
    : "This gateway asks for an API key (TREADLE_AUTH=keys).";
  input.value = "";
  asking = new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => {
        const key = input.value.trim();
        if (key) {
          window.sessionStorage.setItem(KEY, key);
          restartSocket();
        }
        asking = null;
        resolve(Boolean(key));
      },
      { once: true },
    );
    dialog.showModal();
  });
  return asking;
}

/** Run a query or mutation; resolves to `data`, rejects with ApiError. */
export async function gql(query, variables = {}) {
  for (;;) {
    const response = await fetch(ENDPOINT, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json", ...authHeader() },
      body: JSON.stringify({ query, variables }),
    });
    let body;
    try {
      body = await response.json();
    } catch {
      throw new ApiError([{ message: `the gateway answered HTTP ${response.status}` }]);
    }
    const errors = body.errors ?? [];
    if (errors.some((e) => e.extensions?.code === "UNAUTHENTICATED")) {
      if (await askKey(Boolean(apiKey()))) continue;
    }
    if (errors.length) throw new ApiError(errors);
    return body.data;
  }
}

// -- subscriptions ------------------------------------------------------------

let socket = null;
const listeners = new Set();

/** Call `listener(state)` with "connecting", "live" or "offline" as the WebSocket changes. */
export function onSocketState(listener) {
  listeners.add(listener);
  client();
}

function tell(state) {
  for (const listener of listeners) listener(state);
}

function client() {
  if (socket) return socket;
  const url = new URL(ENDPOINT, window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  socket = graphqlWs.createClient({
    url: url.toString(),
    lazy: false,
    keepAlive: 20_000,
    retryAttempts: Infinity,
    shouldRetry: () => true,
    connectionParams: () => {
      const key = apiKey();
      return key ? { authorization: `Bearer ${key}` } : {};
    },
    on: {
      connecting: () => tell("connecting"),
      connected: () => tell("live"),
      closed: () => tell("offline"),
    },
  });
  return socket;
}

/** A new WebSocket, with the key as it is now (a page's subscriptions start again when shown). */
function restartSocket() {
  if (socket) {
    socket.dispose();
    socket = null;
  }
  client();
}

/**
 * Subscribe; `next(data)` for each result, `error(err)` on an error.
 * Returns a function that ends the subscription. All subscriptions share one WebSocket.
 */
export function subscribe(query, variables, { next, error = () => {}, complete = () => {} }) {
  return client().subscribe(
    { query, variables },
    {
      next: (result) => (result.errors ? error(new ApiError(result.errors)) : next(result.data)),
      error: (err) => {
        if (Array.isArray(err)) {
          const failure = new ApiError(err);
          if (failure.code === "UNAUTHENTICATED") askKey(Boolean(apiKey()));
          error(failure);
        } else {
          error(err instanceof Error ? err : new Error("the live connection closed"));
        }
      },
      complete,
    },
  );
}

/** Forget the key (the "Forget key" button). */
export function forgetKey() {
  window.sessionStorage.removeItem(KEY);
  restartSocket();
}

export const hasKey = () => Boolean(apiKey());
