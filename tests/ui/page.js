// Drives weft's page in Debian's headless Chromium (playwright-core, no
// browser download) for tests/tests/ui.rs, one step per run:
//
//   node page.js URL STEP [ARG...]
//
//   graph NODES EDGES          wait until the graph shows that many, all reported
//   edge A B CLASS SECONDS     wait until the edge A-B has CLASS; its details
//   slider ID WAY FIELD AT     move a condition slider to the first position
//                              showing at least AT, as a user drags it
//   exact ID WAY FIELD VALUE   type an exact value; what is shown beside it
//   peer ADDRESS               connect to an address, then forget it
//   text SELECTOR WANT SECONDS wait until an element's text holds WANT
//   write                      try a change from the page's own context
//
// Prints one JSON line: what the step saw, every request the page made,
// and every console error (a Content-Security-Policy violation is one).
// Screenshots go to $WEFT_UI_ARTIFACTS/<STEP>-<n>.png.
'use strict'
const { chromium } = require('playwright-core')
const fs = require('fs')
const path = require('path')

const [url, step, ...args] = process.argv.slice(2)
const artifacts = process.env.WEFT_UI_ARTIFACTS || '.'
const DEADLINE_MS = 20000

async function main() {
    const browser = await chromium.launch({
        executablePath: process.env.WEFT_CHROMIUM || '/usr/bin/chromium',
        args: ['--no-sandbox'],
    })
    const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } })
    const requests = []
    const errors = []
    const responses = []
    page.on('request', r => requests.push(`${r.method()} ${r.url()}`))
    page.on('response', r => responses.push({ method: r.request().method(), url: r.url(), status: r.status() }))
    page.on('console', m => { if (m.type() === 'error' || m.type() === 'warning') errors.push(m.text()) })
    page.on('pageerror', e => errors.push(String(e)))
    let out
    try {
        await page.goto(url)
        out = await STEPS[step](page, responses, ...args)
    } catch (e) {
        out = { failed: String((e && e.stack) || e), responses: responses.slice(-12) }
        process.exitCode = 1
    }
    fs.mkdirSync(artifacts, { recursive: true })
    const shot = path.join(artifacts, `${step}-${fs.readdirSync(artifacts).filter(f => f.startsWith(step)).length}.png`)
    await page.screenshot({ path: shot, fullPage: true })
    await browser.close()
    console.log(JSON.stringify({ ...out, screenshot: shot, requests: [...new Set(requests)], errors }))
}

async function until(what, probe, ms = DEADLINE_MS) {
    const start = Date.now()
    let last
    while (Date.now() - start < ms) {
        last = await probe()
        if (last.ok) return { ...last, waited_ms: Date.now() - start }
        await new Promise(r => setTimeout(r, 100))
    }
    throw new Error(`${what}: not within ${ms} ms; last saw ${JSON.stringify(last)}`)
}

const edges = page => page.$$eval('#graph g.edge', gs => gs.map(g => ({
    a: g.dataset.a, b: g.dataset.b, overlay: g.dataset.overlay, state: g.dataset.state,
    source: g.dataset.source, class: g.getAttribute('class'), stroke: getComputedStyle(g.querySelector('.wire')).stroke,
    dashed: getComputedStyle(g.querySelector('.wire')).strokeDasharray !== 'none',
})))

const STEPS = {
    async graph(page, _, nodes, count) {
        return until('the graph', async () => {
            const seen = await page.$$eval('#graph g.node', gs => gs.map(g => g.dataset.name))
            const drawn = await edges(page)
            // Every edge reported too, by its end or by gossip: a remote
            // edge is drawn from the topology before its report arrives.
            const reported = drawn.every(e => e.source !== 'none')
            return { ok: seen.length === Number(nodes) && drawn.length === Number(count) && reported, nodes: seen, edges: drawn }
        })
    },

    async edge(page, _, a, b, cls, seconds) {
        const found = await until(`edge ${a}-${b} with ${cls}`, async () => {
            const e = (await edges(page)).find(e => e.a === a && e.b === b)
            return { ok: Boolean(e && e.class.split(' ').includes(cls)), edge: e }
        }, Number(seconds) * 1000)
        await page.click(`#graph g.edge[data-a="${a}"][data-b="${b}"]`)
        const details = await page.$$eval('#edge-details dd', dds => Object.fromEntries(dds.map(d => [d.dataset.field, d.textContent])))
        return { ...found, details }
    },

    async slider(page, responses, id, way, field, at) {
        await page.click(`#containers tr[data-id="${id}"] button`)
        const selector = `input[type=range][data-container="${id}"][data-direction="${way}"][data-field="${field}"]`
        await page.waitForSelector(selector)
        // Drag through the positions (input events), let go (change).
        const shown = await page.$eval(selector, (input, at) => {
            const output = input.closest('tr').querySelector('output.value')
            for (let i = Number(input.min); i <= Number(input.max); i++) {
                input.value = i
                input.dispatchEvent(new Event('input'))
                if (parseFloat(output.textContent) >= at) break
            }
            input.dispatchEvent(new Event('change'))
            return output.textContent
        }, Number(at))
        const posted = await until('the change is taken', async () => {
            const r = responses.find(r => r.method === 'POST' && r.url.includes(`/conditions/${id}`))
            return { ok: Boolean(r), response: r }
        })
        return { shown, response: posted.response }
    },

    async exact(page, responses, id, way, field, value) {
        await page.click(`#containers tr[data-id="${id}"] button`)
        const input = `input[data-exact][data-direction="${way}"][data-field="${field}"]`
        await page.waitForSelector(input)
        await page.fill(input, value)
        await page.press(input, 'Enter')
        const beside = `output.error[data-direction="${way}"][data-field="${field}"]`
        const said = await until('the refusal beside the control', async () => {
            const text = await page.$eval(beside, o => o.textContent)
            return { ok: text.length > 0, text }
        })
        const response = responses.find(r => r.method === 'POST' && r.url.includes(`/conditions/${id}`))
        return { beside: said.text, response }
    },

    async text(page, _, selector, want, seconds) {
        return until(`${want} in ${selector}`, async () => {
            const text = await page.$eval(selector, e => e.textContent).catch(() => '')
            return { ok: text.includes(want), text }
        }, Number(seconds) * 1000)
    },

    async peer(page, _, address) {
        await page.waitForSelector('#graph g.node')
        await page.fill('#connect-address', address)
        await page.click('#connect-button')
        const row = `#targets tr[data-address="${address}"]`
        const added = await until('the new target listed', async () => ({ ok: Boolean(await page.$(row)) }))
        await page.click(`${row} button`)
        const gone = await until('the target forgotten', async () => ({ ok: !(await page.$(row)) }))
        return { listed_after_ms: added.waited_ms, forgotten_after_ms: gone.waited_ms }
    },

    async write(page) {
        await page.waitForSelector('#graph g.node')
        const buttons = await page.$$eval('#containers button, #connect-form button', bs => bs.map(b => b.disabled))
        const status = await page.evaluate(async () => {
            const r = await fetch('/connect', {
                method: 'POST', headers: { 'Content-Type': 'application/json' },
                body: JSON.stringify({ peers: ['192.0.2.250:6783'] }),
            })
            return { status: r.status, body: await r.text() }
        })
        const access = await page.$eval('#access', p => p.textContent)
        return { buttons_disabled: buttons, write: status, access }
    },
}

main().catch(e => { console.log(JSON.stringify({ failed: String(e && e.stack || e) })); process.exit(1) })
