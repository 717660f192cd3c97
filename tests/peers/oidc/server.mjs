// A real OpenID Connect provider (the certified `oidc-provider` package) on a loopback port, for the sign-in
// tests. Started by tests/peers/oidc.py; prints one JSON line {"issuer": ...} once it listens.
//
// Environment:
//   OIDC_PEER_CLIENT_ID, OIDC_PEER_CLIENT_SECRET  the one registered client (confidential, code flow + PKCE)
//   OIDC_PEER_REDIRECT_URIS                       its redirect URIs, comma-separated
//
// Accounts: the development login form accepts any login. The account's email is the login when it contains
// "@" (else login@example.test), and it is verified unless the login contains "unverified".
import http from 'node:http';
import Provider from 'oidc-provider';

const clientId = process.env.OIDC_PEER_CLIENT_ID;
const clientSecret = process.env.OIDC_PEER_CLIENT_SECRET;
const redirectUris = (process.env.OIDC_PEER_REDIRECT_URIS || '').split(',').filter(Boolean);
if (!clientId || !clientSecret || redirectUris.length === 0) {
  console.error('OIDC_PEER_CLIENT_ID, OIDC_PEER_CLIENT_SECRET and OIDC_PEER_REDIRECT_URIS are required');
  process.exit(2);
}

function account(id) {
  const email = id.includes('@') ? id : `${id}@example.test`;
  return {
    accountId: id,
    async claims() {
      return { sub: id, email, email_verified: !id.includes('unverified'), name: `Test ${id.split('@')[0]}` };
    },
  };
}

const server = http.createServer();
server.listen(0, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, {
    clients: [{
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: redirectUris,
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    }],
    claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
    findAccount: async (_ctx, id) => account(id),
    // Every grant gets a refresh token, so that the tests see one stored (encrypted).
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    pkce: { required: () => true },
    cookies: { keys: ['darktower-oidc-test-peer'] },
    ttl: { AccessToken: 3600, AuthorizationCode: 600, IdToken: 3600, RefreshToken: 86400, Grant: 86400,
           Interaction: 600, Session: 86400 },
    features: { devInteractions: { enabled: true } },
  });
  server.on('request', provider.callback());
  console.log(JSON.stringify({ issuer }));
});

for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => server.close(() => process.exit(0)));
