import { defineConfig } from 'vite';

// `npm run dev` serves the client on :5173 (any path, /r/<room> too) and forwards Socket.IO and
// /api to a local Roundtable server (`make run`, port 5020); the production build goes to dist/,
// which the server serves at `/` (and at /r/<room>).
export default defineConfig({
  build: {
    outDir: 'dist',
    emptyOutDir: true,
  },
  server: {
    proxy: {
      '/socket.io': { target: 'http://127.0.0.1:5020', ws: true },
      '/api': { target: 'http://127.0.0.1:5020' },
    },
  },
});
