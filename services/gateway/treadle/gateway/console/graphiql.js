// GraphiQL on the vendored UMD builds (React, GraphiQL, the explorer plugin);
// queries over HTTP and subscriptions over graphql-transport-ws, both at this
// page's own URL. The console's API key (sessionStorage), if any, is sent too.
"use strict";

const url = window.location.href.split(/[?#]/)[0];
const wsUrl = url.replace(/^http/, "ws");
const key = window.sessionStorage.getItem("treadle.apiKey");
const auth = key ? { Authorization: `Bearer ${key}` } : {};

const parameters = Object.fromEntries(new URLSearchParams(window.location.search));

const EXAMPLE = `# Treadle's GraphQL API. Ctrl-Enter runs the query; Ctrl-Space completes.
# The web console is at /.
{
  overview { totalQueues throughputLastMinute errorRate activeReplicas }
  queueStatsList { queue length running scheduled paused }
}
`;

const fetcher = GraphiQL.createFetcher({
  url,
  subscriptionUrl: wsUrl,
  headers: auth,
  wsConnectionParams: auth,
});

function updateURL(changes) {
  Object.assign(parameters, changes);
  const search = new URLSearchParams(
    Object.entries(parameters).filter(([, value]) => Boolean(value)),
  );
  history.replaceState(null, "", `?${search}`);
}

function App() {
  return React.createElement(GraphiQL, {
    fetcher,
    defaultQuery: EXAMPLE,
    query: parameters.q,
    variables: parameters.variables,
    onEditQuery: (q) => updateURL({ q }),
    onEditVariables: (variables) => updateURL({ variables }),
    plugins: [GraphiQLPluginExplorer.explorerPlugin()],
    defaultEditorToolsVisibility: true,
    inputValueDeprecation: true,
    isHeadersEditorEnabled: true,
  });
}

ReactDOM.createRoot(document.getElementById("graphiql")).render(React.createElement(App));
